"""Flat minima (issue 21, item 4): small- against large-batch SGD, and a learning-rate pair, at equal
training loss, from run files to the results page.

    python data/scripts/flat_minima.py [--runs runs] [--results docs/results.md]

Runs ``data/configs/flat_minima_{small_batch,large_batch,small_lr,large_lr}.toml`` (a complete file is
kept, an interrupted one resumed), then for every replica takes the first record at which its training
loss is at or below each level L* and there measures the sharpness (the top eigenvalue of the training
loss's Hessian, exact Hessian-vector products and power iteration, ``analysis.sharpness``), reads the
weight-space basin and the test accuracy recorded there, and rewrites the block between
``<!-- flat_minima:begin -->`` and ``<!-- flat_minima:end -->`` of the results page.

Expected from the seed before the runs (Lin et al., ../shared/papers/companions.md; the flat-minima
picture of small-batch SGD): the smaller batch and the larger learning rate end in flatter minima (a
smaller top Hessian eigenvalue and a larger weight-space basin) that generalise better (a higher test
accuracy), and the weight-space basin orders the runs as the sharpness does (the flatter, the wider).

Intervals: 95 % percentile bootstrap over replicas (independent initialisations and batch draws);
differences between two runs resample each run's replicas independently. Rank correlations over all
replica-runs, with a permutation p-value (10,000 permutations; the replicas are independent samples).
"""
import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("small_batch", "large_batch", "small_lr", "large_lr")
PAIRS = (("small_batch", "large_batch", "batch 8 vs 128 at eta 0.05"),
         ("large_lr", "small_lr", "eta 0.2 vs 0.02 at batch 32"))
LEVELS = (0.05, 0.01)
BEGIN, END = "<!-- flat_minima:begin -->", "<!-- flat_minima:end -->"
N_BOOT = 4000


def _complete(config: Path, out: Path) -> Path:
    from dynsim import kinds
    from dynsim.store import RunReader

    if out.exists():
        with RunReader(out) as rd:
            if rd.status["code"] == "completed":
                return out
        result = kinds.resume(out, progress=False)
    else:
        result = kinds.run(kinds.load_config(config), out, progress=False)
    if result.code != "completed":
        raise SystemExit(f"{out}: {result.message}")
    return out


def measure_at_levels(path, levels=LEVELS) -> dict:
    """{level: dict(time, sharpness, basin, test_accuracy) [replica]}, NaN where a replica never got there."""
    from analysis.sharpness import top_eigenvalue
    from dynsim.kinds import stored_config
    from dynsim.store import RunReader

    with RunReader(path) as rd:
        config = stored_config(rd)
        loss = rd.observable("loss_train")
        basin, accuracy = rd.observable("basin_weight"), rd.observable("accuracy_test")
        theta, times, data = rd.trajectory(), rd.times, rd.data()
    arch = config.architecture
    labels = np.asarray(data.y_train, dtype=np.int64)
    out = {}
    for level in levels:
        rows = {name: np.full(loss.shape[1], np.nan) for name in ("time", "loss", "sharpness", "basin",
                                                                 "test_accuracy")}
        for r in range(loss.shape[1]):
            hit = np.flatnonzero(loss[:, r] <= level)
            if not hit.size:
                continue
            k = int(hit[0])
            rows["time"][r], rows["basin"][r], rows["test_accuracy"][r] = times[k], basin[k, r], accuracy[k, r]
            rows["loss"][r] = loss[k, r]  # at or below L*: the records are log-spaced, not at L* itself
            rows["sharpness"][r] = top_eigenvalue(arch, theta[k, r], data.x_train, labels, iterations=500, tol=1e-6)
        out[level] = rows
    return out


def _interval(values, seed=0):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (N_BOOT, v.size))].mean(axis=1)
    return float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _difference(a, b, seed=0):
    """mean(a) - mean(b) with a bootstrap interval resampling a's and b's replicas independently."""
    a, b = (np.asarray(v, dtype=float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    rng = np.random.default_rng(seed)
    boot = (a[rng.integers(0, a.size, (N_BOOT, a.size))].mean(axis=1)
            - b[rng.integers(0, b.size, (N_BOOT, b.size))].mean(axis=1))
    return float(a.mean() - b.mean()), float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def _spearman_permutation(a, b, seed=0, n=10_000):
    from scipy.stats import rankdata

    keep = np.isfinite(a) & np.isfinite(b)
    ra, rb = rankdata(a[keep]), rankdata(b[keep])
    rho = float(np.corrcoef(ra, rb)[0, 1])
    rng = np.random.default_rng(seed)
    null = np.array([np.corrcoef(ra, rng.permutation(rb))[0, 1] for _ in range(n)])
    return rho, float((np.sum(np.abs(null) >= abs(rho)) + 1) / (n + 1)), int(keep.sum())


def _cell(t, digits=3):
    return f"{t[0]:.{digits}g} [{t[1]:.{digits}g}, {t[2]:.{digits}g}]"


def markdown(results: dict) -> str:
    lines = [BEGIN, "", "Generated by `python data/scripts/flat_minima.py` from `runs/flat_minima_*.h5`; mean [95% "
             "bootstrap interval over the 8 replicas], each replica taken at the first record where its training "
             "loss is at or below L* (log-spaced records: the loss there is given; an interval of width 0 is a "
             "record all replicas share).", ""]
    for level in LEVELS:
        lines += [f"**At training loss L* = {level:g}**", "",
                  "| run | time t reached | training loss there | sharpness (top Hessian eigenvalue) | "
                  "weight-space basin | test accuracy |",
                  "|---|---|---|---|---|---|"]
        for name in RUNS:
            rows = results[name][level]
            reached = int(np.isfinite(rows["sharpness"]).sum())
            lines.append(f"| {name} ({reached}/8 reached) | {_cell(_interval(rows['time']))} | "
                         f"{_cell(_interval(rows['loss']))} | {_cell(_interval(rows['sharpness']))} | {_cell(_interval(rows['basin']))} | "
                         f"{_cell(_interval(rows['test_accuracy']))} |")
        lines += ["", "| pair (first minus second) | sharpness | weight basin | test accuracy |", "|---|---|---|---|"]
        for first, second, label in PAIRS:
            a, b = results[first][level], results[second][level]
            lines.append(f"| {label} | {_cell(_difference(a['sharpness'], b['sharpness']))} | "
                         f"{_cell(_difference(a['basin'], b['basin']))} | "
                         f"{_cell(_difference(a['test_accuracy'], b['test_accuracy']))} |")
        pooled = {key: np.concatenate([results[name][level][key] for name in RUNS])
                  for key in ("sharpness", "basin", "test_accuracy")}
        lines.append("")
        for x, y in (("sharpness", "basin"), ("sharpness", "test_accuracy"), ("basin", "test_accuracy")):
            rho, p, n = _spearman_permutation(pooled[x], pooled[y])
            lines.append(f"- Spearman rho({x}, {y}) over {n} replica-runs: {rho:+.3f} (permutation p = {p:.2g})")
        lines += findings(results, level) + [""]
    lines.append(END)
    return "\n".join(lines)


def findings(results, level) -> list[str]:
    """The seed's expectations, checked one by one against the pair differences' intervals."""
    out = []
    for first, second, label in PAIRS:
        a, b = results[first][level], results[second][level]
        for key, want, words in (("sharpness", -1, "flatter (lower sharpness)"), ("basin", +1, "a wider weight basin"),
                                 ("test_accuracy", +1, "a higher test accuracy")):
            mean, low, high = _difference(a[key], b[key])
            verdict = ("as expected" if (low > 0 if want > 0 else high < 0) else
                       "the opposite of the expectation" if (high < 0 if want > 0 else low > 0) else
                       "no difference resolved")
            out.append(f"- {label}: {first} {words} than {second}? {verdict} ({mean:+.3g} [{low:+.3g}, {high:+.3g}])")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in RUNS:
        path = _complete(ROOT / "data" / "configs" / f"flat_minima_{name}.toml", runs / f"flat_minima_{name}.h5")
        results[name] = measure_at_levels(path)
        print(f"{name}: measured", file=sys.stderr)
    text = markdown(results)
    page = Path(args.results)
    old = page.read_text()
    if BEGIN not in old or END not in old:
        raise SystemExit(f"{page} has no {BEGIN} ... {END} markers to write between")
    page.write_text(old[:old.index(BEGIN)] + text + old[old.index(END) + len(END):])
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
