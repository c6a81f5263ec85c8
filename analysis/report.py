"""``analysis report``: figures and a markdown summary with fitted numbers, from one or more run files.

Everything is read through ``dynsim.store.RunReader`` (committed records only, so a file still
being written gives a report of what it has so far). Figures are PNG, log-log where the quantity
spans decades. Fit windows are explicit: by default the last two decades of recorded time
(t in [t_end / 100, t_end]); ``--window T0 T1`` sets them.
"""
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from dynsim.store import EXPERIMENT_CHAIN, RunReader, file_experiment
from dynsim.sweep import is_sweep_file, sweep_points

from . import quantities as q
from .chain import chain_section
from .deep import deep_run_section, deep_sweep_section, is_deep_run, is_deep_sweep
from .plasticity import plasticity_section
from .regions import regions_section
from .saturation import SATURATING_LOSSES, saturation_section
from .collapse import best_collapse
from .fits import compare_decay_models, fit_power_law


@dataclasses.dataclass
class RunSummary:
    path: str
    label: str
    lines: list
    numbers: dict


def _nanmean(values, axis):
    """Mean ignoring NaN; all-NaN slices (a probe that never flips, a pair not reached yet) give NaN quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def default_window(t: np.ndarray) -> tuple[float, float]:
    t_end = float(t[-1])
    return (t_end / 100.0, t_end)


def _label(reader) -> str:
    m, t = reader.model_attrs, reader.training_attrs
    label = f"{t['method']}"
    if t["method"] == "sde":
        label += f"/{t['noise']}"
    return f"{label} {m['activation']} N={m['width']} eta={t['eta']:g}"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _band_plot(ax, t, values, label, color=None):
    band = q.ensemble_band(values)
    keep = t > 0
    line, = ax.plot(t[keep], band[1][keep], label=label, color=color)
    ax.fill_between(t[keep], band[0][keep], band[2][keep], alpha=0.2, color=line.get_color())
    return line


def _fit_lines(name, t, values, window):
    """Power-law fit and model comparison of an ensemble's decay, as report lines and numbers."""
    keep = (t >= window[0]) & (t <= window[1]) & (t > 0)
    if keep.sum() < 3:
        return [f"- {name}: fewer than 3 records in the window {window}; no fit"], {}, None
    positive = np.where(values > 0, values, np.nan)
    fit = fit_power_law(t, positive.T, window=window)
    lines = [f"- {name}: {fit.summary()}"]
    numbers = {f"{name}_exponent": fit.exponent, f"{name}_exponent_ci": fit.exponent_ci}
    try:
        comparison = compare_decay_models(t, positive.T, window=window)
    except ValueError as exc:
        lines.append(f"  - model comparison not possible: {exc}")
    else:
        lines.append(f"  - {comparison.summary()}")
        numbers[f"{name}_best_model"] = comparison.best
    return lines, numbers, fit


def summarise_run(path, out_dir: Path, window=None) -> RunSummary:
    plt = _plt()
    stem = Path(path).stem
    with RunReader(path) as rd:
        label = _label(rd)
        t = rd.times
        names = set(rd.observable_names)
        status = rd.status
        win = tuple(window) if window is not None else default_window(t)
        lines = [f"## {stem}: {label}", "",
                 f"- file `{path}`, status {status['code']}, {rd.n_records} records to step {rd.steps[-1]} "
                 f"(t = {t[-1]:g}), {rd.attrs.get('n_replicas')} replicas",
                 f"- fit window t in [{win[0]:g}, {win[1]:g}]"]
        numbers = {}
        figures = []
        loss = rd.observable("loss_train")
        fig, ax = plt.subplots(figsize=(5, 3.6))
        _band_plot(ax, t, loss, "train")
        if "loss_test" in names:
            _band_plot(ax, t, rd.observable("loss_test"), "test")
        ax.set(xscale="log", yscale="log", xlabel="t", ylabel="loss", title=f"{stem}: loss (median, 10-90%)")
        ax.legend()
        figures.append(_save(fig, out_dir / f"{stem}_loss.png"))
        numbers["final_loss_mean"] = float(np.nanmean(loss[-1]))
        lines.append(f"- final training loss: mean {numbers['final_loss_mean']:.4g}")

        if "response" in names:
            _, amp = q.response_amplitude(rd)
            new, nums, fit = _fit_lines("response amplitude A(t)", t, amp, win)
            lines += new
            numbers.update(nums)
            share = q.factorisation_share(rd, win)
            numbers["factorisation_share"] = share
            lines.append(f"- rank-one share of the response A(t) K(x, x_s) over the window: {share:.4f}")
            figures.append(_decay_figure(plt, t, amp, fit, "response amplitude A(t)", out_dir / f"{stem}_response.png"))
        if "ntk" in names:
            _, kamp = q.kernel_amplitude(rd)
            _, change = q.relative_kernel_change(rd)
            numbers["kernel_change_final"] = float(np.nanmean(change[-1]))
            lines.append(f"- relative NTK change |Theta_t - Theta_0| / |Theta_0| at the end: "
                         f"{numbers['kernel_change_final']:.4g} (mean over replicas)")
            new, nums, fit = _fit_lines("kernel amplitude", t, kamp, win)
            lines += new
            numbers.update(nums)
            figures.append(_decay_figure(plt, t, kamp, fit, "NTK amplitude (RMS over probe pairs)",
                                         out_dir / f"{stem}_kernel.png"))
        if "effective_rank" in names:
            er = rd.observable("effective_rank")
            pr = rd.observable("participation_ratio")
            numbers["effective_rank_final"] = float(np.nanmean(er[-1]))
            numbers["participation_ratio_final"] = float(np.nanmean(pr[-1]))
            lines.append(f"- effective rank of hidden features at the end: {numbers['effective_rank_final']:.4g}; "
                         f"participation ratio {numbers['participation_ratio_final']:.4g}")
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
            _band_plot(axes[0], t, er, "effective rank")
            _band_plot(axes[0], t, pr, "participation ratio")
            axes[0].set(xscale="log", xlabel="t", ylabel="units", title="feature-space dimension")
            axes[0].legend()
            axes[1].plot(np.nanmean(loss, axis=1), np.nanmean(er, axis=1), marker=".")
            axes[1].set(xscale="log", xlabel="mean training loss", ylabel="mean effective rank",
                        title="effective rank against loss")
            axes[1].invert_xaxis()
            figures.append(_save(fig, out_dir / f"{stem}_features.png"))
        if "input_grad_norm" in names:
            # flip_distance is recorded with input_grad_norm by default, but a config may list either alone
            gn = np.nanmean(rd.observable("input_grad_norm"), axis=2)
            numbers["input_grad_norm_final"] = float(np.nanmean(gn[-1]))
            text = f"- fragility at the end: mean |df/dx| {numbers['input_grad_norm_final']:.4g}"
            fig, ax = plt.subplots(figsize=(5, 3.6))
            _band_plot(ax, t, gn, "|df/dx| (probe mean)")
            if "flip_distance" in names:
                flip = rd.observable("flip_distance")
                finite = np.where(np.isfinite(flip), flip, np.nan)
                numbers["flip_fraction_final"] = float(np.mean(np.isfinite(flip[-1])))
                numbers["flip_distance_final"] = (float(_nanmean(finite[-1], None)) if np.any(np.isfinite(flip[-1]))
                                                  else math.inf)
                text += (f"; {100 * numbers['flip_fraction_final']:.0f}% of probes flip within the search range, "
                         f"at mean distance {numbers['flip_distance_final']:.4g}")
                _band_plot(ax, t, _nanmean(finite, axis=2), "flip distance (finite, probe mean)")
            lines.append(text)
            ax.set(xscale="log", xlabel="t", title="fragility")
            ax.legend()
            figures.append(_save(fig, out_dir / f"{stem}_fragility.png"))
        if "output" in names and rd.model_attrs.get("outputs", 1) > 1:
            new, nums, figs = regions_section(rd, stem, out_dir, plt)
            lines += new
            numbers.update(nums)
            figures += figs
        elif rd.training_attrs["loss"] in SATURATING_LOSSES:
            if {"output", "ntk"} <= names:
                new, nums, figs = saturation_section(rd, stem, out_dir, plt, window)
                lines += new
                numbers.update(nums)
                figures += figs
            new, nums, figs = plasticity_section(rd, stem, out_dir, plt)
            lines += new
            numbers.update(nums)
            figures += figs
        if rd.has_two_time:
            new, nums, figs = _two_time_section(plt, rd, stem, out_dir)
            lines += new
            numbers.update(nums)
            figures += figs
    lines.append("")
    lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    lines.append("")
    return RunSummary(str(path), label, lines, numbers)


def _two_time_section(plt, rd, stem, out_dir):
    axes = rd.two_time_axes()
    t_w, tau = axes["t_w_time"], axes["tau_time"]
    lines, numbers, figures = [], {}, []
    for name, ylabel in (("autocorrelation", "C(t_w, t_w + tau)"), ("msd", "Delta(t_w, t_w + tau)")):
        values = rd.two_time(name)
        mean = _nanmean(values, axis=2)
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
        for i in range(len(t_w)):
            ax.plot(tau, mean[i], marker=".", label=f"t_w = {t_w[i]:g}")
        ax.set(xscale="log", xlabel="tau", ylabel=ylabel, title=f"{name} against the lag")
        if name == "msd":
            ax.set_yscale("log")
        ax.legend(fontsize=7)
        finite_rows = np.isfinite(mean).sum(axis=1) >= 2
        fit = None
        if finite_rows.sum() >= 2:
            fit = best_collapse(t_w[finite_rows], tau, values[finite_rows])
            numbers[f"{name}_collapse_mu"] = fit.mu
            numbers[f"{name}_collapse_mu_ci"] = fit.mu_ci
            lines.append(f"- {name} collapse against tau / t_w^mu: {fit.summary()}")
            for i in range(len(t_w)):
                ax2.plot(tau / t_w[i] ** fit.mu, mean[i], marker=".")
            ax2.set(xscale="log", xlabel=f"tau / t_w^{fit.mu:.2f}", ylabel=ylabel, title="scaling collapse")
            if name == "msd":
                ax2.set_yscale("log")
        figures.append(_save(fig, out_dir / f"{stem}_{name}.png"))
    return lines, numbers, figures


def _decay_figure(plt, t, values, fit, title, path):
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _band_plot(ax, t, values, "median, 10-90%")
    if fit is not None:
        tt = np.geomspace(*fit.window, 50)
        ax.plot(tt, fit.amplitude * tt ** fit.exponent, "k--",
                label=f"t^{fit.exponent:.3f} [{fit.exponent_ci[0]:.3f}, {fit.exponent_ci[1]:.3f}]")
    ax.set(xscale="log", yscale="log", xlabel="t", title=title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return str(path)


def compare_runs(plt, summaries, readers_paths, out_dir):
    """Several files: effective rank and input-gradient norm against loss, one curve per run."""
    lines = []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    plotted = False
    for summary, path in zip(summaries, readers_paths):
        with RunReader(path) as rd:
            names = set(rd.observable_names)
            loss = np.nanmean(rd.observable("loss_train"), axis=1)
            if "effective_rank" in names:
                axes[0].plot(loss, np.nanmean(rd.observable("effective_rank"), axis=1), marker=".", label=summary.label)
                plotted = True
            if "input_grad_norm" in names:
                axes[1].plot(loss, np.nanmean(rd.observable("input_grad_norm"), axis=(1, 2)), marker=".",
                             label=summary.label)
                plotted = True
    if not plotted:
        return lines, []
    for ax, ylabel in zip(axes, ("effective rank", "mean |df/dx|")):
        ax.set(xscale="log", xlabel="mean training loss", ylabel=ylabel)
        ax.invert_xaxis()
        ax.legend(fontsize=7)
    path = _save(fig, out_dir / "compare_features.png")
    lines.append("## Comparison at equal loss")
    lines.append("")
    lines.append(f"![compare_features]({Path(path).name})")
    return lines, [path]


def sweep_table(path, window=None) -> tuple[list[str], list[dict]]:
    """Per point of a merged sweep file: its axis values, final loss and fitted exponents."""
    rows = []
    points = sweep_points(path)
    axes = list(points[0][1]) if points else []
    for group, values in points:
        with RunReader(path, group=group) as rd:
            t = rd.times
            win = tuple(window) if window is not None else default_window(t)
            row = dict(values)
            row["final_loss"] = float(np.nanmean(rd.observable("loss_train")[-1]))
            for label, fn, needs in (("response_exponent", q.response_amplitude, "response"),
                                     ("kernel_exponent", q.kernel_amplitude, "ntk")):
                row[label] = math.nan
                if needs in rd.observable_names and ((t >= win[0]) & (t <= win[1]) & (t > 0)).sum() >= 3:
                    _, amp = fn(rd)
                    try:
                        row[label] = fit_power_law(t, np.where(amp > 0, amp, np.nan).T, window=win).exponent
                    except ValueError:
                        pass
            if "effective_rank" in rd.observable_names:
                row["effective_rank"] = float(np.nanmean(rd.observable("effective_rank")[-1]))
        rows.append(row)
    return axes, rows


def _sweep_section(plt, path, out_dir, window):
    axes, rows = sweep_table(path, window)
    stem = Path(path).stem
    lines = [f"## sweep {stem}: {len(rows)} completed points over {', '.join(axes)}", ""]
    columns = axes + [c for c in ("final_loss", "response_exponent", "kernel_exponent", "effective_rank")
                      if any(c in r for r in rows)]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for r in rows:
        lines.append("| " + " | ".join(f"{r.get(c, math.nan):.4g}" if isinstance(r.get(c), float)
                                       else str(r.get(c)) for c in columns) + " |")
    figures = []
    if len(axes) >= 2 and rows:
        a0, a1 = axes[0], axes[1]
        v0 = sorted({r[a0] for r in rows})
        v1 = sorted({r[a1] for r in rows})
        for quantity in ("final_loss", "response_exponent"):
            grid = np.full((len(v1), len(v0)), np.nan)
            for i, y in enumerate(v1):
                for j, x in enumerate(v0):
                    vals = [r[quantity] for r in rows if r[a0] == x and r[a1] == y and np.isfinite(r[quantity])]
                    if vals:
                        grid[i, j] = np.mean(vals)  # averaged over the other axes (e.g. seeds)
            if not np.isfinite(grid).any():
                continue
            fig, ax = plt.subplots(figsize=(5, 4))
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
            ax.set_xticks(range(len(v0)), [f"{v:g}" if isinstance(v, float) else str(v) for v in v0])
            ax.set_yticks(range(len(v1)), [f"{v:g}" if isinstance(v, float) else str(v) for v in v1])
            ax.set(xlabel=a0, ylabel=a1, title=f"{quantity} (mean over other axes)")
            fig.colorbar(im, ax=ax)
            figures.append(_save(fig, out_dir / f"{stem}_{quantity}_map.png"))
    lines.append("")
    lines += [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    lines.append("")
    return lines


def write_report(paths, out_dir, *, window=None, transfer=False) -> Path:
    """Write figures and ``report.md`` for ``paths`` into ``out_dir``; returns the markdown path.

    A merged sweep file (``dynsim sweep``) gets a table of its points and heat maps of the final
    loss and the fitted response exponent over its first two axes; a max-norm chain file
    (``dynsim run`` of a maxnorm_chain config) gets the collapse, distance, norm-growth, wormhole
    and flip-label figures of ``analysis.chain``; a deep-MLP run (model kind 'mlp') gets
    ``analysis.deep.deep_run_section`` and a merged sweep of them ``deep_sweep_section`` (the other
    sections assume the one-hidden-layer network). ``transfer``: also the adversarial transfer between
    the replicas of each classification run of the one-hidden-layer network (``analysis.transfer``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweeps = [p for p in paths if is_sweep_file(p)]
    chains = [p for p in paths if p not in sweeps and file_experiment(p) == EXPERIMENT_CHAIN]
    paths = [p for p in paths if p not in sweeps and p not in chains]
    deep = [p for p in paths if is_deep_run(p)]
    paths = [p for p in paths if p not in deep]
    summaries = [summarise_run(p, out_dir, window) for p in paths]
    text = ["# dynsim analysis report", ""]
    for p in sweeps:
        text += deep_sweep_section(p, out_dir, _plt())[0] if is_deep_sweep(p) else _sweep_section(_plt(), p, out_dir,
                                                                                                  window)
    for p in chains:
        text += chain_section(p, out_dir, _plt()).lines
    for p in deep:
        text += deep_run_section(p, out_dir, _plt())[0]
    for s in summaries:
        text += s.lines
    if transfer:
        from .transfer import transfer_section

        for p in paths:
            text += transfer_section(p, out_dir, _plt())[0]
    if len(summaries) > 1:
        extra, _ = compare_runs(_plt(), summaries, paths, out_dir)
        text += extra
    md = out_dir / "report.md"
    md.write_text("\n".join(text) + "\n")
    return md
