"""Report sections of the one-hidden-layer network (kind ``simple``), and the table of a merged sweep of them.

Each ``*_section(source, plt)`` reads the open ``dynsim.store.RunReader`` of a report source
(``analysis.sections.ReportSource``: the reader, the file's stem, the output directory and the fit
window) and returns (markdown lines, numbers, figure paths); ``analysis.sections`` registers them
under the names the kind lists (``training``, ``response``, ...) with the condition under which each
applies. Fit windows are explicit: by default the last two decades of recorded time
(t in [t_end / 100, t_end]); a ``window`` (T0, T1) replaces it.
"""
import dataclasses
import math
import warnings
from pathlib import Path

import numpy as np

from dynsim.store import RunReader
from dynsim.sweep import sweep_points

from . import quantities as q
from .collapse import best_collapse
from .figures import band_plot, save
from .fits import compare_decay_models, fit_power_law


def _nanmean(values, axis):
    """Mean ignoring NaN; all-NaN slices (a probe that never flips, a pair not reached yet) give NaN quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def default_window(t: np.ndarray) -> tuple[float, float]:
    t_end = float(t[-1])
    return (t_end / 100.0, t_end)


def fit_window(t: np.ndarray, window=None) -> tuple[float, float]:
    """The fit window of a run: ``window`` when given, else ``default_window``."""
    return tuple(window) if window is not None else default_window(t)


def run_label(reader) -> str:
    """A run's trainer, activation, width and learning rate, in one short line (headings, legends)."""
    m, t = reader.model_attrs, reader.training_attrs
    label = f"{t['method']}"
    if t["method"] == "sde":
        label += f"/{t['noise']}"
    if "activation" in m:
        label += f" {m['activation']}"
    if "width" in m:
        label += f" N={m['width']}"
    if "kernel" in m:  # a model of the function (the response law): its kernel and amplitude
        label += f" K={m['kernel']} A={m['amplitude']}"
    return f"{label} eta={t['eta']:g}"


def fit_lines(name, t, values, window):
    """Power-law fit and model comparison of an ensemble's decay, as report lines and numbers."""
    keep = (t >= window[0]) & (t <= window[1]) & (t > 0)
    if keep.sum() < 3:
        return [f"- {name}: fewer than 3 records in the window {window}; no fit"], {}, None
    # a replica that diverged (NaN in the file from then on) is left out whole, not averaged in
    # where it still had values: the fit is over the replicas finite throughout the window
    finite = np.all(np.isfinite(values[keep]), axis=0)
    left_out = int(np.size(finite) - np.count_nonzero(finite))
    if not finite.any():
        return [f"- {name}: no replica is finite over the window {window}; no fit"], {}, None
    values = values[:, finite]
    positive = np.where(values > 0, values, np.nan)
    fit = fit_power_law(t, positive.T, window=window)
    note = (f" ({left_out} of {np.size(finite)} replicas left out: not finite over the window)" if left_out
            else "")
    lines = [f"- {name}: {fit.summary()}{note}"]
    numbers = {f"{name}_exponent": fit.exponent, f"{name}_exponent_ci": fit.exponent_ci}
    if left_out:
        numbers[f"{name}_replicas_left_out"] = left_out
    try:
        comparison = compare_decay_models(t, positive.T, window=window)
    except ValueError as exc:
        lines.append(f"  - model comparison not possible: {exc}")
        comparison = None
    else:
        lines.append(f"  - {comparison.summary()}")
        numbers[f"{name}_best_model"] = comparison.best
        numbers[f"{name}_aic"] = {model: float(result.aic) for model, result in comparison.models.items()}
    numbers[f"{name}_window"] = tuple(float(v) for v in fit.window)
    return lines, numbers, DrawnFit(fit, comparison)


@dataclasses.dataclass(frozen=True)
class DrawnFit:
    """A power-law fit and the model comparison over the same window: figures draw the preferred model."""
    power_law: object
    comparison: object

    def curve(self, tt):
        """(label, values) of the preferred model on times ``tt``."""
        best = self.comparison.best if self.comparison is not None else "power_law"
        if best == "power_law":
            f = self.power_law
            return (f"t^{f.exponent:.3f} [{f.exponent_ci[0]:.3f}, {f.exponent_ci[1]:.3f}] (preferred)",
                    f.amplitude * tt ** f.exponent)
        p = self.comparison.models[best].params
        if best == "exponential":
            return f"A exp(-t / {p['tau']:.3g}) (preferred)", p["A"] * np.exp(-tt / p["tau"])
        return (f"A exp(-(t / {p['tau']:.3g})^{p['beta']:.2f}) (preferred)",
                p["A"] * np.exp(-(tt / p["tau"]) ** p["beta"]))


def decay_figure(plt, t, values, fit, title, path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    band_plot(ax, t, values, "median, 10-90%")
    if fit is not None:  # only the model the comparison prefers over the window is drawn
        tt = np.geomspace(*fit.power_law.window, 50)
        label, values = fit.curve(tt)
        ax.plot(tt, values, "k--", label=label)
    ax.set(xscale="log", yscale="log", xlabel="t", title=title)
    ax.legend(fontsize=8)
    return save(fig, path)


# -- one run ---------------------------------------------------------------------------------------------
def training_section(source, plt):
    """The run's heading, file, fit window and training (and test) loss."""
    rd, stem, out_dir = source.reader, source.stem, source.out_dir
    t = rd.times
    status = rd.status
    win = fit_window(t, source.window)
    lines = [f"## {stem}: {run_label(rd)}", "",
             f"- file `{source.path}`, status {status['code']}, {rd.n_records} records to step {rd.steps[-1]} "
             f"(t = {t[-1]:g}), {rd.attrs.get('n_replicas')} replicas",
             f"- fit window t in [{win[0]:g}, {win[1]:g}]"]
    if "measured_from" in rd.attrs:  # a 'dynsim measure' file: name the run it was measured from
        lines.append(f"- measured afterwards from `{rd.attrs['measured_from']}` (its recorded trajectory)")
    if "loss_train" not in rd.observable_names:
        return lines, {}, []
    loss = rd.observable("loss_train")
    fig, ax = plt.subplots(figsize=(5, 3.6))
    band_plot(ax, t, loss, "train")
    if "loss_test" in rd.observable_names:
        band_plot(ax, t, rd.observable("loss_test"), "test")
    ax.set(xscale="log", yscale="log", xlabel="t", ylabel="loss", title=f"{stem}: loss (median, 10-90%)")
    ax.legend()
    figures = [save(fig, out_dir / f"{stem}_loss.png")]
    diverged = ~np.isfinite(loss[-1])
    numbers = {"final_loss_mean": float(np.nanmean(loss[-1])) if not diverged.all() else float("nan")}
    lines.append(f"- final training loss: mean {numbers['final_loss_mean']:.4g}")
    if diverged.any():
        numbers["replicas_diverged"] = int(diverged.sum())
        lines.append(f"- {int(diverged.sum())} of {diverged.size} replicas diverged (their records are NaN from "
                     "then on, /status/replica_failed_step has the step): the means and fits below leave them out")
    return lines, numbers, figures


def response_section(source, plt):
    """The response amplitude A(t): its decay fit and how much of the response is rank one."""
    rd, stem, out_dir = source.reader, source.stem, source.out_dir
    t = rd.times
    win = fit_window(t, source.window)
    _, amp = q.response_amplitude(rd)
    lines, numbers, fit = fit_lines("response amplitude A(t)", t, amp, win)
    share = q.factorisation_share(rd, win)
    numbers["factorisation_share"] = share
    numbers["factorisation_share_ci"] = q.factorisation_share_interval(rd, win)
    low, high = numbers["factorisation_share_ci"]
    lines.append(f"- rank-one share of the response A(t) K(x, x_s) over the window: {share:.4f} [{low:.4f}, "
                 f"{high:.4f}] (95% bootstrap over replicas)")
    figures = [decay_figure(plt, t, amp, fit, "response amplitude A(t)", out_dir / f"{stem}_response.png")]
    return lines, numbers, figures


def kernel_section(source, plt):
    """The empirical NTK: its relative change over training and the decay of its amplitude."""
    rd, stem, out_dir = source.reader, source.stem, source.out_dir
    t = rd.times
    win = fit_window(t, source.window)
    _, kamp = q.kernel_amplitude(rd)
    _, change = q.relative_kernel_change(rd)
    numbers = {"kernel_change_final": float(np.nanmean(change[-1]))}
    lines = [f"- relative NTK change |Theta_t - Theta_0| / |Theta_0| at the end: "
             f"{numbers['kernel_change_final']:.4g} (mean over replicas)"]
    lines += _kernel_course(t, kamp, numbers)
    new, nums, fit = fit_lines("kernel amplitude", t, kamp, win)
    if fit is not None and fit.comparison is not None and fit.comparison.best != "power_law":
        # the exponent is reported only where a power law is the preferred model (issue 22)
        new[0] = (f"- kernel amplitude: no power law over the window (the comparison below prefers "
                  f"{fit.comparison.best}); the power-law exponent there would be {fit.power_law.exponent:.3f}")
    elif fit is not None:
        new[0] += kernel_fit_caveat(numbers, win)
    lines += new
    numbers.update(nums)
    figures = [decay_figure(plt, t, kamp, fit, "NTK amplitude (RMS over probe pairs)", out_dir / f"{stem}_kernel.png")]
    return lines, numbers, figures


def kernel_fit_caveat(numbers: dict, window) -> str:
    """The words a kernel-amplitude fit needs when the amplitude passes its minimum inside the fit
    window and rises by more than 5 % after it: the three decay models compared cannot rise, so the
    one preferred is ranked among them, not a description of the curve."""
    t_min = numbers.get("kernel_min_t")
    if t_min is None or not window[0] < t_min < window[1] or numbers["kernel_rise"] <= 1.05:
        return ""
    return (f" -- the amplitude passes its minimum inside the window (t = {t_min:g}) and rises after it: "
            "this exponent averages a fall and a rise, it is not an aging exponent")


def _kernel_course(t, amplitude, numbers) -> list[str]:
    """Where the NTK amplitude (median over replicas) falls and where it rises, over the whole run."""
    keep = t > 0
    if keep.sum() < 3:
        return []
    tt = t[keep]
    median = np.nanmedian(amplitude[keep], axis=1)
    k = int(np.nanargmin(median))
    numbers.update(kernel_min_t=float(tt[k]), kernel_fall=float(median[0] / median[k]),
                   kernel_rise=float(median[-1] / median[k]))
    text = (f"- NTK amplitude (median over replicas) over the whole run: from t = {tt[0]:g} it falls by a factor "
            f"{numbers['kernel_fall']:.3g} to its minimum at t = {tt[k]:g}")
    if k < len(tt) - 1:
        text += f", then rises by a factor {numbers['kernel_rise']:.3g} to t = {tt[-1]:g}"
    return [text]


def features_section(source, plt):
    """The hidden features' effective rank and participation ratio, over time and against the loss."""
    rd, stem, out_dir = source.reader, source.stem, source.out_dir
    t = rd.times
    loss = rd.observable("loss_train")
    er = rd.observable("effective_rank")
    pr = rd.observable("participation_ratio")
    numbers = {"effective_rank_final": float(np.nanmean(er[-1])),
               "participation_ratio_final": float(np.nanmean(pr[-1]))}
    lines = [f"- effective rank of hidden features at the end: {numbers['effective_rank_final']:.4g}; "
             f"participation ratio {numbers['participation_ratio_final']:.4g}"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    band_plot(axes[0], t, er, "effective rank")
    band_plot(axes[0], t, pr, "participation ratio")
    axes[0].set(xscale="log", xlabel="t", ylabel="units", title="feature-space dimension")
    axes[0].legend()
    axes[1].plot(np.nanmean(loss, axis=1), np.nanmean(er, axis=1), marker=".")
    axes[1].set(xscale="log", xlabel="mean training loss", ylabel="mean effective rank",
                title="effective rank against loss")
    axes[1].invert_xaxis()
    return lines, numbers, [save(fig, out_dir / f"{stem}_features.png")]


def fragility_section(source, plt):
    """The input-gradient norm and, where recorded, the distance at which probes flip class."""
    rd, stem, out_dir = source.reader, source.stem, source.out_dir
    t = rd.times
    gn = np.nanmean(rd.observable("input_grad_norm"), axis=2)
    numbers = {"input_grad_norm_final": float(np.nanmean(gn[-1]))}
    text = f"- fragility at the end: mean |df/dx| {numbers['input_grad_norm_final']:.4g}"
    fig, ax = plt.subplots(figsize=(5, 3.6))
    band_plot(ax, t, gn, "|df/dx| (probe mean)")
    # flip_distance is recorded with input_grad_norm by default, but a config may list either alone
    if "flip_distance" in rd.observable_names:
        flip = rd.observable("flip_distance")
        finite = np.where(np.isfinite(flip), flip, np.nan)
        numbers["flip_fraction_final"] = float(np.mean(np.isfinite(flip[-1])))
        numbers["flip_distance_final"] = (float(_nanmean(finite[-1], None)) if np.any(np.isfinite(flip[-1]))
                                          else math.inf)
        text += (f"; {100 * numbers['flip_fraction_final']:.0f}% of probes flip within the search range, "
                 f"at mean distance {numbers['flip_distance_final']:.4g}")
        band_plot(ax, t, _nanmean(finite, axis=2), "flip distance (finite, probe mean)")
    ax.set(xscale="log", xlabel="t", title="fragility")
    ax.legend()
    return [text], numbers, [save(fig, out_dir / f"{stem}_fragility.png")]


def two_time_section(source, plt):
    """Autocorrelation and mean squared displacement against the lag, and their aging collapse."""
    rd, stem, out_dir = source.reader, source.stem, source.out_dir
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
        if finite_rows.sum() >= 2:
            fit = best_collapse(t_w[finite_rows], tau, values[finite_rows])
            numbers[f"{name}_collapse_mu"] = fit.mu
            numbers[f"{name}_collapse_mu_ci"] = fit.mu_ci
            numbers[f"{name}_collapse_mu_flat"] = fit.mu_flat_range
            numbers[f"{name}_collapse_mu_master"] = (fit.mu_master, *fit.mu_master_ci)
            lines.append(f"- {name} collapse against tau / t_w^mu: {fit.summary()}")
            for i in range(len(t_w)):
                ax2.plot(tau / t_w[i] ** fit.mu, mean[i], marker=".")
            ax2.set(xscale="log", xlabel=f"tau / t_w^{fit.mu:.2f}", ylabel=ylabel, title="scaling collapse")
            if name == "msd":
                ax2.set_yscale("log")
        figures.append(save(fig, out_dir / f"{stem}_{name}.png"))
    return lines, numbers, figures


# -- a merged sweep of runs --------------------------------------------------------------------------------
def sweep_table(path, window=None) -> tuple[list[str], list[dict]]:
    """Per point of a merged sweep file: its axis values, final loss and fitted exponents."""
    rows = []
    points = sweep_points(path)
    axes = list(points[0][1]) if points else []
    for group, values in points:
        with RunReader(path, group=group) as rd:
            t = rd.times
            win = fit_window(t, window)
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


def sweep_table_section(path, out_dir, plt, window=None):
    """The sweep's table (``sweep_table``) and heat maps of the final loss and the response exponent
    over its first two axes; returns (lines, numbers, figures)."""
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
            figures.append(save(fig, out_dir / f"{stem}_{quantity}_map.png"))
    return lines, {"sweep_axes": axes, "sweep_points": rows}, figures
