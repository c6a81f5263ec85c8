"""Blocks of a results page that code writes: the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` is replaced, the rest of the page kept as it is (docs/results.md).

The scripts under ``data/scripts/`` that write them share the rest here too: their command line
(``results_arguments``), writing their blocks (``write_blocks``) and the interval every number of the
page carries (``bootstrap_mean``)."""
import argparse
from pathlib import Path

import numpy as np


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(page, name: str, block: str) -> None:
    """Write ``block`` (which starts and ends with the markers of ``name``) in place of the page's block
    ``name``; ValueError when the page has no such markers."""
    page = Path(page)
    begin, end = markers(name)
    text = page.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{page} has no {begin} ... {end} markers to write between")
    page.write_text(text[:text.index(begin)] + block + text[text.index(end) + len(end):])


def write_blocks(page, blocks: dict) -> None:
    """``replace_block`` for every {name: block}, each printed as it is written."""
    for name, block in blocks.items():
        replace_block(page, name, block)
        print(block)


def results_arguments(doc: str, root: Path, argv=None, *, figures: str | None = None) -> argparse.Namespace:
    """The command line every results script takes: ``--runs`` (where its run files are kept; created)
    and ``--results`` (the page), both relative to the project ``root`` by default; and ``--figures``
    (default ``root / figures``) for a script that draws."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", default=str(root / "runs"), help="folder of the run files (default: runs/)")
    parser.add_argument("--results", default=str(root / "docs" / "results.md"), help="the page to write")
    if figures is not None:
        parser.add_argument("--figures", default=str(root / figures), help=f"folder of the figures (default: {figures})")
    args = parser.parse_args(argv)
    args.runs = Path(args.runs)
    args.runs.mkdir(parents=True, exist_ok=True)
    return args


def bootstrap_mean(values, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high) of the finite values: the mean and its 95 % percentile bootstrap interval (NaN
    for all three when no value is finite)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (float("nan"),) * 3
    means = v[np.random.default_rng(seed).integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_difference(a, b, *, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high) over the finite values of two independent samples (two runs'
    replicas): each resample draws a's and b's values independently; 95 % percentile interval."""
    a, b = (np.asarray(v, dtype=float).ravel() for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    rng = np.random.default_rng(seed)
    boot = (a[rng.integers(0, a.size, (n_boot, a.size))].mean(axis=1)
            - b[rng.integers(0, b.size, (n_boot, b.size))].mean(axis=1))
    return float(a.mean() - b.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))
