"""Double descent against width with label noise (issue 21, item 6), from run files to the results page.

    python data/scripts/double_descent.py [--runs runs] [--results docs/results.md] [--figures docs/figures/double_descent]

Runs the points of ``data/configs/double_descent_{digits,mnist1d}.toml`` one after another (the point
files of ``dynsim sweep`` on the same configs, ``runs/double_descent_NAME/points/NNNN.h5``; a complete
file is kept, an interrupted one resumed), reads every replica's training accuracy, test error and
test loss at the last record, and rewrites the block between ``<!-- double_descent:begin -->`` and
``<!-- double_descent:end -->`` of the results page, plus one figure per data set.

Expected from the seed before the runs (Lin et al., ../shared/papers/companions.md, which counts
double descent among what the framework explains; the hand-copied 3-replica digits sweep of section 8,
where the peak was weak in the error and clear in the loss): on both data sets the test error, and
more clearly the test loss, peaks at the interpolation threshold (the smallest width whose mean
training accuracy is >= 0.99) above the lowest test error of the narrower, under-fitting widths, and
falls again for wider nets (the second descent). The measured statement, fixed before the runs:

* threshold w* = the smallest width with mean training accuracy >= 0.99 (``analysis.deep``);
* peak excess = mean test error at w* minus the lowest mean test error over the widths below w*
  (the bottom of the classical U), with the bottom chosen again in every bootstrap resample, so the
  selection's downward bias is inside the interval; "resolved" when the 95 % interval excludes 0;
  the same for the test loss;
* second descent = mean test error at w* minus that at the widest width, its interval likewise.
The curve's own peak (``analysis.deep.test_error_peak``: the largest mean at or after the bottom) is
reported beside it, as a description, not as the test.

Added after the runs, beside the stated test and not replacing it: the minimum over the narrower
widths is biased low, and the percentile interval of a statistic with such a selection inherits the
bias (the point estimate sat near the low end of its interval on both data sets). The block
therefore also gives the basic (bias-reversing) bootstrap interval [2 est - q97.5, 2 est - q2.5] of
the peak excess, and says where the two intervals disagree on whether the peak is resolved.

Intervals: 95 % percentile bootstrap over the 10 replicas (independent initialisations and batch
draws on one data set per config). All widths share the run seed, so replica r of every width draws
the same data; the bootstrap resamples replica indices jointly across widths (a paired bootstrap,
valid whether or not the widths' replicas are correlated). A diverged replica (non-finite values) is
left out of its width.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATASETS = ("digits", "mnist1d")
LABELS = {"digits": "8x8 digits", "mnist1d": "MNIST-1D"}
BEGIN, END = "<!-- double_descent:begin -->", "<!-- double_descent:end -->"
N_BOOT = 4000
LEVEL = 0.99
QUANTITIES = ("accuracy_train", "test_error", "loss_test")


def sweep_paths(name, runs=None):
    """[(width, point path)] of the sweep config double_descent_NAME.toml, run (or kept, or resumed) one by one."""
    from dynsim.kinds import ensure_run
    from dynsim.sweep import load_sweep

    sweep = load_sweep(ROOT / "data" / "configs" / f"double_descent_{name}.toml",
                       output=None if runs is None else Path(runs) / f"double_descent_{name}")
    out = []
    for point in sweep.points:
        path = sweep.point_path(point)
        path.parent.mkdir(parents=True, exist_ok=True)
        ensure_run(point.config, path)
        out.append((int(point.values["model.width"]), path))
        print(f"{name}: width {point.values['model.width']} done", file=sys.stderr)
    return out


def read_final(paths) -> dict:
    """{'width': [W], quantity: [W, replica]} at each file's last record (NaN where a replica diverged)."""
    from dynsim.store import RunReader

    widths, rows = [], {q: [] for q in QUANTITIES}
    for width, path in sorted(paths):
        with RunReader(path) as reader:
            train = reader.observable("accuracy_train")[-1]
            test = reader.observable("accuracy_test")[-1]
            loss = reader.observable("loss_test")[-1]
        widths.append(width)
        rows["accuracy_train"].append(train)
        rows["test_error"].append(1.0 - test)
        rows["loss_test"].append(loss)
    out = {q: np.asarray(v, dtype=float) for q, v in rows.items()}
    out["width"] = np.asarray(widths)
    return out


def _means(values):
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values)
        return np.where(finite, values, 0.0).sum(axis=-1) / np.maximum(finite.sum(axis=-1), 1) + np.where(
            finite.any(axis=-1), 0.0, np.nan)


def _boot_index(n_replicas, seed=0):
    return np.random.default_rng(seed).integers(0, n_replicas, (N_BOOT, n_replicas))


def _interval(samples):
    samples = np.asarray(samples, dtype=float)
    samples = samples[np.isfinite(samples)]
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def threshold_index(widths, train_means, level=LEVEL):
    """Index of the smallest width whose mean training accuracy is >= level (None if none)."""
    hits = [k for k in np.argsort(widths) if train_means[k] >= level]
    return int(hits[0]) if hits else None


def peak_excess(means, k_star):
    """means [W] (ascending widths): means[k*] - min(means[:k*]); NaN without a width below k*."""
    if k_star is None or k_star == 0:
        return np.nan
    return means[k_star] - np.nanmin(means[:k_star])


def summarise(data: dict) -> dict:
    """Per width means and intervals, the threshold, the peak excess and the second descent with intervals."""
    from analysis.deep import test_error_peak

    widths = data["width"]
    order = np.argsort(widths)
    data = {k: (v[order] if k == "width" else v[order]) for k, v in data.items()}
    widths = data["width"]
    n_rep = data["accuracy_train"].shape[1]
    index = _boot_index(n_rep)
    out = dict(width=widths, n=np.isfinite(data["test_error"]).sum(axis=1))
    boot = {}
    for q in QUANTITIES:
        out[q] = _means(data[q])
        boot[q] = _means(data[q][:, index])  # [W, N_BOOT]
        out[q + "_ci"] = np.array([_interval(b) for b in boot[q]])
    k_star = threshold_index(widths, out["accuracy_train"])
    out["threshold"] = None if k_star is None else int(widths[k_star])
    out["k_star"] = k_star
    for q in ("test_error", "loss_test"):
        est = peak_excess(out[q], k_star)
        samples = np.array([peak_excess(boot[q][:, b], k_star) for b in range(N_BOOT)])
        lo, hi = _interval(samples) if np.isfinite(est) else (np.nan, np.nan)
        bottom = None if k_star in (None, 0) else int(widths[int(np.nanargmin(out[q][:k_star]))])
        # (estimate, percentile low, high, bottom width, basic-bootstrap low, high)
        out[q + "_excess"] = (float(est), lo, hi, bottom, 2 * est - hi, 2 * est - lo)
        second = out[q][k_star] - out[q][-1] if k_star is not None else np.nan
        samples = boot[q][k_star] - boot[q][-1] if k_star is not None else np.full(N_BOOT, np.nan)
        lo, hi = _interval(samples) if np.isfinite(second) else (np.nan, np.nan)
        out[q + "_second"] = (float(second), lo, hi)
        out[q + "_peak"] = test_error_peak([int(w) for w in widths], out[q], out["threshold"])
    return out


def _cell(mean, ci, digits=3):
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _verdict(t):
    est, lo, hi = t[:3]
    if not np.isfinite(est):
        return "not measurable (no width below the threshold)"
    if lo > 0:
        return "resolved: the interval excludes 0"
    if hi < 0:
        return "resolved in the opposite direction: the threshold is lower"
    return "not resolved: the interval includes 0"


def markdown(results: dict, n_replicas: int) -> str:
    lines = [BEGIN, "", f"Generated by `python data/scripts/double_descent.py` from `runs/double_descent_{{digits,mnist1d}}/"
             f"points/*.h5`; every value at the last record, mean [95 % bootstrap interval over the {n_replicas} "
             "replicas, replica indices resampled jointly across widths]; test error = 1 - test accuracy on the "
             "clean test set. Threshold w* = smallest width with mean training accuracy >= 0.99. Peak excess = "
             "value at w* minus the lowest value among the widths below w* (that bottom chosen again in every "
             "resample); second descent = value at w* minus that at the widest width.", ""]
    for name in DATASETS:
        r = results[name]
        lines += [f"**{LABELS[name]}** (`double_descent_{name}.toml`)", "",
                  "| width | train acc. | test error | test loss | replicas |", "|---|---|---|---|---|"]
        for k, w in enumerate(r["width"]):
            mark = "**" if r["threshold"] == int(w) else ""
            lines.append(f"| {mark}{int(w)}{mark} | {_cell(r['accuracy_train'][k], r['accuracy_train_ci'][k])} | "
                         f"{_cell(r['test_error'][k], r['test_error_ci'][k])} | "
                         f"{_cell(r['loss_test'][k], r['loss_test_ci'][k])} | {int(r['n'][k])} |")
        lines.append("")
        if r["threshold"] is None:
            lines += [f"- No width reaches mean training accuracy {LEVEL}: no interpolation threshold, no double "
                      "descent to test.", ""]
            continue
        lines.append(f"- Interpolation threshold w* = **{r['threshold']}** (in bold above).")
        for q, word in (("test_error", "test error"), ("loss_test", "test loss")):
            est, lo, hi, bottom, basic_lo, basic_hi = r[q + "_excess"]
            peak = r[q + "_peak"]
            where = ("the curve's largest value at or after the bottom is at width "
                     f"{peak}" if peak is not None else "the curve has no rise beyond the bottom")
            lines.append(f"- {word.capitalize()} peak excess at w* over the pre-threshold minimum (width {bottom}): "
                         f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}] (stated percentile interval), {_verdict(r[q + '_excess'])}; "
                         f"basic bootstrap interval [{basic_lo:+.3f}, {basic_hi:+.3f}], "
                         f"{_verdict((est, basic_lo, basic_hi))}; {where}.")
            est, lo, hi = r[q + "_second"]
            lines.append(f"- {word.capitalize()} second descent, w* minus the widest ({int(r['width'][-1])}): "
                         f"{est:+.3f} [{lo:+.3f}, {hi:+.3f}], {_verdict(r[q + '_second'])}.")
        error = r["test_error_excess"]
        if error[1] > 0 and error[4] > 0:
            verdict = "**agrees**: the peak is resolved beyond both intervals."
        elif error[1] > 0:
            verdict = ("**agrees only by the stated percentile interval**: the bias-reversing basic interval "
                       "includes 0, so the peak is not robustly resolved at this size.")
        elif error[2] < 0:
            verdict = "**disagrees**: the error at w* is resolved below the pre-threshold minimum."
        else:
            verdict = "**the peak is not there beyond its interval** at this size (the interval includes 0)."
        lines += ["", "Against the expectation (a test-error peak at w* above the pre-threshold minimum): " + verdict, ""]
    lines.append(END)
    return "\n".join(lines)


def figure(results: dict, out_dir) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, r in results.items():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for ax, q, label in zip(axes, QUANTITIES, ("train accuracy", "test error", "test loss")):
            ci = r[q + "_ci"]
            ax.plot(r["width"], r[q], "o-", ms=3, color="C0")
            ax.fill_between(r["width"], ci[:, 0], ci[:, 1], alpha=0.3, color="C0")
            if r["threshold"] is not None:
                ax.axvline(r["threshold"], color="C3", ls="--", lw=1, label=f"w* = {r['threshold']}")
            ax.set_xscale("log")
            ax.set_xlabel("width")
            ax.set_title(label)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"double descent, {LABELS.get(name, name)}: mean and 95 % bootstrap band over replicas", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"double_descent_{name}.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        written.append(str(path))
    return written


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from analysis.blocks import results_arguments, write_blocks

    args = results_arguments(__doc__, ROOT, argv, figures="docs/figures/double_descent")
    results, n_replicas = {}, 0
    for name in DATASETS:
        data = read_final(sweep_paths(name, args.runs))
        n_replicas = data["accuracy_train"].shape[1]
        results[name] = summarise(data)
    write_blocks(args.results, {"double_descent": markdown(results, n_replicas)})
    figure(results, args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
