"""``analysis report``: figures and a markdown summary with fitted numbers, from one or more files.

What a file's report holds is decided by the kind that wrote it (``dynsim.kinds``): its
``report_sections`` name sections of the registry ``analysis.sections``, rendered in that order; a
merged sweep file gets the ``sweep_report_sections`` of the kind of its first stored point. This
module only assembles the parts. Files are read through the ``dynsim.store`` readers (committed
records only, so a file still being written gives a report of what it has so far). Figures are PNG,
log-log where the quantity spans decades. Fit windows are explicit: by default the last two decades
of recorded time (t in [t_end / 100, t_end]); ``--window T0 T1`` sets them.

Runs of the one-hidden-layer network (the files reported with the ``training`` section) also get,
when there are several, a comparison at equal loss (``compare_runs``) and, with ``transfer``, the
adversarial transfer between their replicas (``analysis.transfer``).
"""
from pathlib import Path

import numpy as np

from dynsim.store import RunReader
from dynsim.sweep import sweep_failures

from .figures import pyplot, save
from .sections import plan_report, render_file
from .simple import run_label, sweep_table

__all__ = ["COMPARED_SECTION", "compare_runs", "sweep_table", "write_report"]

# tests/test_analysis_deep.py imports the backend helper by this old name

#: the section that marks a run of the one-hidden-layer network, the runs compared and attacked
COMPARED_SECTION = "training"


def compare_runs(paths, out_dir) -> tuple[list[str], list[str]]:
    """Several runs: effective rank and input-gradient norm against loss, one curve per run; returns
    (report lines, figure paths), both empty when no run records either quantity."""
    plt = pyplot()
    lines = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    plotted = False
    for path in paths:
        with RunReader(path) as rd:
            label = run_label(rd)
            names = set(rd.observable_names)
            loss = np.nanmean(rd.observable("loss_train"), axis=1)
            if "effective_rank" in names:
                axes[0].plot(loss, np.nanmean(rd.observable("effective_rank"), axis=1), marker=".", label=label)
                plotted = True
            if "input_grad_norm" in names:
                axes[1].plot(loss, np.nanmean(rd.observable("input_grad_norm"), axis=(1, 2)), marker=".",
                             label=label)
                plotted = True
    if not plotted:
        plt.close(fig)
        return lines, []
    for ax, ylabel in zip(axes, ("effective rank", "mean |df/dx|")):
        ax.set(xscale="log", xlabel="mean training loss", ylabel=ylabel)
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    path = save(fig, Path(out_dir) / "compare_features.png")
    lines.append("## Comparison at equal loss")
    lines.append("")
    lines.append(f"![compare_features]({Path(path).name})")
    return lines, [path]


def _empty_sweep_lines(path) -> list[str]:
    """A merged sweep file with no stored point has no kind to ask for sections: say what became of its points."""
    lines = [f"## sweep {Path(path).stem}: no completed points", ""]
    for name, values, code, message in sweep_failures(path):
        where = ", ".join(f"{a} = {v}" for a, v in values.items())
        lines.append(f"- point {name} ({where}) not included: {code}: {message}")
    return lines + [""]


def write_report(paths, out_dir, *, window=None, transfer=False) -> Path:
    """Write figures and ``report.md`` for ``paths`` into ``out_dir``; returns the markdown path.

    Each file gets the sections its kind lists (``analysis.sections.plan_report``), merged sweep
    files first and then the other files in the order given. Every file's kind and sections are
    resolved before anything is drawn, so an unreadable file or an unregistered section fails at once
    (``StoreError`` / ``SectionError``, both named in one line by the CLI). ``transfer``: also the
    adversarial transfer between the replicas of each one-hidden-layer classification run."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = [plan_report(p) for p in paths]
    plans = [p for p in plans if p.sweep] + [p for p in plans if not p.sweep]
    text = ["# dynsim analysis report", ""]
    compared = []
    for plan in plans:
        if plan.kind is None:
            text += _empty_sweep_lines(plan.path)
            continue
        text += render_file(plan.path, out_dir, plan.sections, kind=plan.kind, window=window).lines
        if not plan.sweep and COMPARED_SECTION in plan.section_names:
            compared.append(plan.path)
    if transfer:
        from .transfer import transfer_section

        for p in compared:
            text += transfer_section(p, out_dir, pyplot())[0]
    if len(compared) > 1:
        text += compare_runs(compared, out_dir)[0]
    md = out_dir / "report.md"
    md.write_text("\n".join(text) + "\n")
    return md
