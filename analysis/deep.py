"""Report sections of deep MLP classifiers (``[model] kind = "mlp"``): one run, and merged sweeps of them.

Everything is read through ``dynsim.store.RunReader``; the observables are those of
``dynsim.observables.deep`` (their definitions are in that module's docstring). Conventions used
throughout (R = replicas of a run):

* mean +- s.e.: the mean over the replicas whose value is finite, and the standard error
  std(ddof=1) / sqrt(n) over those n replicas (NaN when n < 2);
* per replica scalars derived from the recorded arrays: ``basin_sample`` is averaged over the
  basin samples (sources) of the replica; ``mode_*`` are averaged over hidden layers, every layer
  weighted equally whatever its width ("layer-mean"); ``test_error`` is 1 - accuracy_test;
* "at the last record": the last committed record of the file.

Grokking (``grokking_delay``): per replica, t_train (t_test) is the first time the training
(test) accuracy reaches ``level``; see ``first_crossing`` for the interpolation. The delay is
t_test - t_train and the ratio t_test / t_train, per replica that reached both; they are
summarised by their mean and median over those replicas. How the basins and the neuron modes
change across the transition is shown by their values at the last record strictly before t_train
and at the first record at or after t_test (see ``grokking_from_arrays``).

Double descent over a sweep axis (``deep_sweep_section``, ``double_descent``): the interpolation
threshold is the smallest axis value whose mean training accuracy is >= 0.99; the test-error peak
is the axis value of the largest mean test error; the peak is "near" the threshold when it lies
within a factor 2 of it (threshold / 2 <= peak <= 2 x threshold).
"""
import math
import warnings
from pathlib import Path

import numpy as np

from dynsim.kinds import stored_config
from dynsim.store import RunReader

from .figures import gallery, save

MODE_NAMES = ("mode_order_preserving", "mode_dead", "mode_order_breaking")
MODE_LABELS = {"mode_order_preserving": "order-preserving", "mode_dead": "dead (flat)",
               "mode_order_breaking": "order-breaking (mixed)", "mode_gain_fraction": "samples in the high-gain part"}
# Per replica scalar series [record, replica] derived from the recorded observables, in report order.
SERIES = ("accuracy_train", "accuracy_test", "test_error", "loss_train", "loss_test", "basin_sample",
          "basin_weight") + MODE_NAMES + ("feature_rank_data", "feature_rank_noise", "fooling_fraction",
                                          "noise_confidence", "param_norm")
# The ones whose change across the grokking transition is reported.
TRANSITION_SERIES = ("basin_sample", "basin_weight") + MODE_NAMES + ("feature_rank_data", "feature_rank_noise",
                                                                      "fooling_fraction")
INTERPOLATION_LEVEL = 0.99
PEAK_FACTOR = 2.0


# -- pure array logic ----------------------------------------------------------------------------------
def _quiet(fn, *args, **kwargs):
    """NumPy nan-reductions of all-NaN slices (a replica that diverged, a quantity never reached) give NaN
    without a RuntimeWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def mean_se(values, axis=1):
    """(mean, standard error, n) over ``axis`` ignoring non-finite entries: mean of the n finite values,
    std(ddof=1) / sqrt(n) (NaN where n < 2)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    n = finite.sum(axis=axis)
    clean = np.where(finite, values, np.nan)
    mean = _quiet(np.nanmean, clean, axis=axis)
    std = _quiet(np.nanstd, clean, axis=axis, ddof=1)
    se = np.where(n >= 2, std / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, se, n


def first_crossing(t, values, level, interpolate=True):
    """First time each replica's ``values`` [record, replica] reaches ``level`` (>=), and its record index.

    Returns (times [replica], index [replica]); index is the first record i with values[i] >= level
    (-1 and time NaN if no record reaches it; NaN values never reach it). The time is t[i], or with
    ``interpolate`` the crossing of the straight line between records i-1 and i in (log t, value):
    log t* = log t[i-1] + w (log t[i] - log t[i-1]), w = (level - v[i-1]) / (v[i] - v[i-1]), so t* lies in
    (t[i-1], t[i]]. No interpolation (t[i] itself) when i = 0, t[i-1] <= 0 (no logarithm) or v[i-1] is NaN.
    """
    t = np.asarray(t, dtype=float)
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        reached = values >= level
    any_reached = reached.any(axis=0)
    index = np.where(any_reached, reached.argmax(axis=0), -1)
    times = np.full(values.shape[1], np.nan)
    for r, i in enumerate(index):
        if i < 0:
            continue
        times[r] = t[i]
        if interpolate and i > 0 and t[i - 1] > 0 and np.isfinite(values[i - 1, r]):
            v0, v1 = values[i - 1, r], values[i, r]  # v0 < level <= v1
            w = (level - v0) / (v1 - v0)
            times[r] = math.exp(math.log(t[i - 1]) + w * (math.log(t[i]) - math.log(t[i - 1])))
    return times, index


def _summary(values) -> tuple[float, float, int]:
    """(mean, median, count) over the finite entries; NaN statistics when there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(np.median(v)), int(v.size)


def grokking_from_arrays(t, accuracy_train, accuracy_test, level=0.9, extras=None, interpolate=True) -> dict:
    """Grokking numbers from arrays: t [record], accuracies [record, replica], ``extras`` {name: [record, replica]}.

    Per replica (``first_crossing``): ``t_train``, ``t_test`` (NaN if never reached), ``delay`` =
    t_test - t_train and ``ratio`` = t_test / t_train (NaN unless both are reached; the ratio also NaN
    when t_train = 0), all arrays [replica]. Summaries over the replicas where the quantity is finite:
    ``{q}_mean``, ``{q}_median`` for q in t_train, t_test, delay, ratio; ``n_train_reached``,
    ``n_test_reached``, ``n_both_reached``; ``n_replicas``, ``level``, ``interpolated``.

    ``before_train`` {name: mean}: the mean over replicas of extras[name] at the last record strictly
    before t_train (record i_train - 1, i_train the first record reaching the level; replicas with
    i_train = 0 or never reaching it are left out); ``at_test`` {name: mean}: the mean at the first
    record reaching the test level (record i_test, the first record at or after t_test).
    """
    acc_train = np.asarray(accuracy_train, dtype=float)
    acc_test = np.asarray(accuracy_test, dtype=float)
    t_train, i_train = first_crossing(t, acc_train, level, interpolate)
    t_test, i_test = first_crossing(t, acc_test, level, interpolate)
    both = np.isfinite(t_train) & np.isfinite(t_test)
    delay = np.where(both, t_test - t_train, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(both & (t_train > 0), t_test / np.where(t_train > 0, t_train, 1.0), np.nan)
    out = dict(level=float(level), interpolated=bool(interpolate), n_replicas=int(acc_train.shape[1]),
               t_train=t_train, t_test=t_test, delay=delay, ratio=ratio)
    for name, values in (("t_train", t_train), ("t_test", t_test), ("delay", delay), ("ratio", ratio)):
        out[f"{name}_mean"], out[f"{name}_median"], _ = _summary(values)
    out["n_train_reached"] = int(np.isfinite(t_train).sum())
    out["n_test_reached"] = int(np.isfinite(t_test).sum())
    out["n_both_reached"] = int(both.sum())
    before, at = {}, {}
    replicas = np.arange(acc_train.shape[1])
    for name, values in (extras or {}).items():
        values = np.asarray(values, dtype=float)
        ok = i_train >= 1
        before[name] = _summary(values[i_train[ok] - 1, replicas[ok]])[0]
        ok = i_test >= 0
        at[name] = _summary(values[i_test[ok], replicas[ok]])[0]
    out["before_train"] = before
    out["at_test"] = at
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def interpolation_threshold(values, train_accuracy, level=INTERPOLATION_LEVEL):
    """Smallest axis value whose mean training accuracy is >= ``level`` (numeric values: the smallest;
    other values: the first in the given order); None if no value reaches it."""
    acc = np.asarray(train_accuracy, dtype=float)
    with np.errstate(invalid="ignore"):
        hits = [v for v, a in zip(values, acc) if a >= level]
    if not hits:
        return None
    return min(hits) if all(_is_number(v) for v in hits) else hits[0]


def test_error_peak(values, test_error, threshold=None):
    """Axis value of the second-descent peak of a curve over ascending axis values, relative to the
    interpolation ``threshold``: the largest value at or after the bottom of the classical U, the
    bottom being the lowest point among the values below the threshold (the first point if there is
    none). None when the largest value is that bottom itself (no rise beyond it), when there is no
    threshold (a curve that never interpolates has no double descent), or when all values are NaN.
    """
    err = np.asarray(test_error, dtype=float)
    if threshold is None or not np.isfinite(err).any():
        return None
    below = [k for k, v in enumerate(values) if _is_number(v) and v < threshold and np.isfinite(err[k])]
    bottom = min(below, key=lambda k: err[k]) if below else int(np.flatnonzero(np.isfinite(err))[0])
    after = np.where(np.arange(len(err)) >= bottom, err, np.nan)
    peak = int(np.nanargmax(after))
    return values[peak] if peak != bottom else None


test_error_peak.__test__ = False  # its name starts with test_: a test module importing it must not collect it


def peak_near_threshold(peak, threshold, factor=PEAK_FACTOR):
    """threshold / factor <= peak <= factor x threshold for positive numbers; peak == threshold when either
    is <= 0; None when either is missing or not numeric."""
    if peak is None or threshold is None or not (_is_number(peak) and _is_number(threshold)):
        return None
    if peak <= 0 or threshold <= 0:
        return bool(peak == threshold)
    return bool(threshold / factor <= peak <= factor * threshold)


def best_value(values, test_accuracy):
    """(axis value, its mean test accuracy) maximising the mean test accuracy; (None, NaN) if all are NaN."""
    acc = np.asarray(test_accuracy, dtype=float)
    if not np.isfinite(acc).any():
        return None, math.nan
    k = int(np.nanargmax(acc))
    return values[k], float(acc[k])


def double_descent(values, train_accuracy, test_error, level=INTERPOLATION_LEVEL, factor=PEAK_FACTOR,
                   test_loss=None) -> dict:
    """``interpolation_threshold``, ``test_error_peak`` and ``peak_near_threshold`` of per-value means;
    with ``test_loss``, also ``test_loss_peak`` and ``loss_peak_near_threshold`` (the same second-descent
    peak of the mean test loss, often the clearer signal for a classifier)."""
    threshold = interpolation_threshold(values, train_accuracy, level)
    peak = test_error_peak(values, test_error, threshold)
    out = dict(interpolation_threshold=threshold, test_error_peak=peak,
               peak_near_threshold=peak_near_threshold(peak, threshold, factor))
    if test_loss is not None:
        loss_peak = test_error_peak(values, test_loss, threshold)
        out.update(test_loss_peak=loss_peak, loss_peak_near_threshold=peak_near_threshold(loss_peak, threshold, factor))
    return out


# -- reading -------------------------------------------------------------------------------------------
def deep_series(reader) -> dict:
    """{name: [record, replica]} of the per replica scalars of ``SERIES`` the file records (see the module
    docstring: basin_sample averaged over sources, modes over layers, test_error = 1 - accuracy_test)."""
    names = set(reader.observable_names)
    out = {}
    for name in SERIES:
        if name == "test_error":
            if "accuracy_test" in names:
                out[name] = 1.0 - reader.observable("accuracy_test")
        elif name in names:
            values = np.asarray(reader.observable(name), dtype=float)
            if values.ndim == 3:  # [record, replica, source|layer]
                values = _quiet(np.nanmean, values, axis=2)
            out[name] = values
    return out


def grokking_delay(reader, level=0.9, interpolate=True):
    """Grokking numbers of an open run (``grokking_from_arrays`` on the reader's t, accuracy_train,
    accuracy_test and the ``TRANSITION_SERIES`` it records). The crossing time is interpolated linearly in
    log t between the two records around it (``first_crossing``); ``interpolate=False`` gives the time of
    the first record reaching the level. None when the file lacks either accuracy."""
    series = deep_series(reader)
    if "accuracy_train" not in series or "accuracy_test" not in series:
        return None
    extras = {k: series[k] for k in TRANSITION_SERIES if k in series}
    return grokking_from_arrays(reader.times, series["accuracy_train"], series["accuracy_test"], level, extras,
                                interpolate)


# -- formatting and plotting ---------------------------------------------------------------------------
def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if _is_number(value):
        return "nan" if not np.isfinite(value) else f"{float(value):.4g}"
    return str(value)


def _table(header, rows) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows])


def _band(ax, t, values, label, log_x=True, color=None):
    """Mean over replicas with a +-1 s.e. band; t <= 0 dropped on a log axis."""
    mean, se, _ = mean_se(values)
    keep = (t > 0) if log_x else np.ones(len(t), dtype=bool)
    keep &= np.isfinite(mean)
    line, = ax.plot(t[keep], mean[keep], marker=".", label=label, color=color)
    se = np.where(np.isfinite(se), se, 0.0)
    ax.fill_between(t[keep], (mean - se)[keep], (mean + se)[keep], alpha=0.25, color=line.get_color())
    return line


def _mark(ax, grok):
    """Dashed lines at the median t_train and t_test of the grokking measurement."""
    if not grok:
        return
    for key, style in (("t_train_median", "--"), ("t_test_median", ":")):
        value = grok.get(key)
        if value is not None and np.isfinite(value) and value > 0:
            ax.axvline(value, color="k", linestyle=style, linewidth=0.8, label=key.replace("_median", " (median)"))


def _title(reader) -> str:
    m, tr = reader.model_attrs, reader.training_attrs
    widths = np.atleast_1d(m.get("widths", [m.get("width")]))
    width = f"N={int(widths[0])}" if len(set(widths.tolist())) == 1 else f"widths={widths.tolist()}"
    text = f"mlp L={int(m['depth'])} {width} {m['activation']}, {tr['method']} eta={float(tr['eta']):g}"
    if "batch_size" in tr and tr["method"] != "gd":
        text += f" B={int(tr['batch_size'])}"
    if float(tr.get("weight_decay", 0.0) or 0.0) > 0:
        text += f" wd={float(tr['weight_decay']):g}"
    return text


# -- one run -------------------------------------------------------------------------------------------
def deep_run_section(path, out_dir, plt, group=None, level=0.9) -> tuple[list[str], dict]:
    """Markdown lines and PNG figures (in ``out_dir``) of one deep-MLP run; returns (lines, numbers).

    Figures (x = t on a log axis; curves are the mean over replicas with a +-1 s.e. band):
    accuracy and loss (train, test); the three neuron-mode fractions per hidden layer at the last
    record and their layer-mean against t; the mean sample-space basin and the weight-space basin;
    the feature ranks of data and noise and the fooling fraction (with the noise confidence).

    numbers: ``final`` {name: mean at the last record} and ``final_se`` {name: s.e.} for the
    ``SERIES`` the file records; ``final_modes_per_layer`` {mode: [layer] mean over replicas};
    ``grokking`` (``grokking_delay`` at ``level``, None without accuracies); ``t_end``, ``n_records``,
    ``n_replicas``, ``depth``, ``widths``, ``status``.
    """
    lines, numbers, figures = deep_run_parts(path, out_dir, plt, group, level)
    return lines + gallery(figures), numbers


def deep_run_parts(path, out_dir, plt, group=None, level=0.9) -> tuple[list[str], dict, list[str]]:
    """``deep_run_section`` as (lines without the figures' images, numbers, figure paths)."""
    out_dir = Path(out_dir)
    stem = Path(path).stem + (f"_{group.replace('/', '_')}" if group else "")
    with RunReader(path, group) as rd:
        t = np.asarray(rd.times, dtype=float)
        m = rd.model_attrs
        status = rd.status
        config = stored_config(rd)
        series = deep_series(rd)
        per_layer = {name: np.asarray(rd.observable(name), dtype=float) for name in MODE_NAMES
                     if name in rd.observable_names}
        gain = np.asarray(rd.observable("mode_gain_fraction"), dtype=float) \
            if "mode_gain_fraction" in rd.observable_names else None
        grok = grokking_delay(rd, level)
        title = _title(rd)
        n_replicas = int(rd.attrs.get("n_replicas", 0))
        last_step = int(rd.steps[-1]) if rd.n_records else 0
    if len(t) == 0:
        return [f"## {stem}: {title}", "", f"- file `{path}` has no committed records yet"], {}, []
    task = config.task
    numbers = dict(t_end=float(t[-1]), n_records=int(len(t)), n_replicas=n_replicas, depth=int(m["depth"]),
                   widths=[int(w) for w in np.atleast_1d(m["widths"])], status=status["code"])
    lines = [f"## {stem}: {title}", "",
             f"- file `{path}`{f' group `{group}`' if group else ''}, status {status['code']}, {len(t)} records to "
             f"step {last_step} (t = {t[-1]:g}), {n_replicas} replicas",
             f"- task {task.kind}: {task.train_size} training samples, label noise {task.label_noise:g}, "
             f"{int(m['classes'])} classes; {int(m['n_params'])} parameters", "",
             "At the last record (mean +- s.e. over replicas; basin_sample averaged over basin samples, modes over "
             "layers):", ""]
    final, final_se = {}, {}
    rows = []
    for name, values in series.items():
        mean, se, n = mean_se(values[-1:], axis=1)
        final[name], final_se[name] = float(mean[0]), float(se[0])
        rows.append((name, final[name], final_se[name], f"{int(n[0])}/{values.shape[1]}"))
    numbers["final"], numbers["final_se"] = final, final_se
    lines += _table(("quantity", "mean", "s.e.", "finite replicas"), rows)
    figures = []

    # accuracy and loss
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for name, label in (("accuracy_train", "train"), ("accuracy_test", "test")):
        if name in series:
            _band(axes[0], t, series[name], label)
    _mark(axes[0], grok)
    axes[0].set(xscale="log", xlabel="t", ylabel="accuracy", title="accuracy (mean +- s.e.)")
    for name, label in (("loss_train", "train"), ("loss_test", "test")):
        if name in series:
            _band(axes[1], t, series[name], label)
    positive = [series[n][t > 0] for n in ("loss_train", "loss_test") if n in series]
    log_y = bool(positive) and all(np.all(v[np.isfinite(v)] > 0) for v in positive)
    axes[1].set(xscale="log", yscale="log" if log_y else "linear", xlabel="t", ylabel="cross-entropy",
                title="loss (mean +- s.e.)")
    for ax in axes:
        ax.legend(fontsize=7)
    figures.append(save(fig, out_dir / f"{stem}_deep_accuracy.png"))

    # neuron modes
    if gain is not None:
        numbers["final_gain_fraction_per_layer"] = mean_se(gain[-1], axis=0)[0].tolist()
    if per_layer:
        numbers["final_modes_per_layer"] = {}
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        layer_rows = None
        for name, values in per_layer.items():
            mean, se, _ = mean_se(values[-1], axis=0)  # [layer]
            numbers["final_modes_per_layer"][name] = mean.tolist()
            layers = np.arange(1, len(mean) + 1)
            axes[0].errorbar(layers, mean, yerr=np.where(np.isfinite(se), se, 0.0), marker="o", capsize=2,
                             label=MODE_LABELS[name])
            _band(axes[1], t, series[name], MODE_LABELS[name])
            layer_rows = [[int(k)] for k in layers] if layer_rows is None else layer_rows
            for row, v in zip(layer_rows, mean):
                row.append(float(v))
        axes[0].set(xlabel="hidden layer", ylabel="fraction of neurons", ylim=(-0.05, 1.05),
                    title=f"neuron modes at t = {t[-1]:g}")
        axes[0].set_xticks(np.arange(1, len(layer_rows) + 1))
        _mark(axes[1], grok)
        axes[1].set(xscale="log", xlabel="t", ylabel="fraction (layer mean)", ylim=(-0.05, 1.05),
                    title="neuron modes, mean over layers")
        for ax in axes:
            ax.legend(fontsize=7)
        figures.append(save(fig, out_dir / f"{stem}_deep_modes.png"))
        profiles = {name: per_layer[name] for name in ("mode_order_preserving", "mode_dead") if name in per_layer}
        if gain is not None:
            profiles["mode_gain_fraction"] = gain
        figures.append(_mode_profile_figure(plt, profiles, t, stem, out_dir))
        lines += ["", "Neuron modes per hidden layer at the last record (fraction of neurons, mean over replicas):",
                  ""]
        lines += _table(("layer",) + tuple(MODE_LABELS[n] for n in per_layer), layer_rows)
        if "final_gain_fraction_per_layer" in numbers:
            lines += ["", "Fraction of training samples in a neuron's high-gain part (sigma' >= 1/2 its maximum), mean "
                      "over neurons and replicas, per hidden layer at the last record: "
                      + ", ".join(f"{v:.3f}" for v in numbers["final_gain_fraction_per_layer"])]

    # basins
    basins = [n for n in ("basin_sample", "basin_weight") if n in series]
    if basins:
        fig, axes = plt.subplots(1, len(basins), figsize=(4.5 * len(basins), 3.6), squeeze=False)
        for ax, name in zip(axes[0], basins):
            _band(ax, t, series[name], name)
            _mark(ax, grok)
            ax.set(xscale="log", xlabel="t",
                   ylabel="input radius" if name == "basin_sample" else "relative weight perturbation",
                   title="sample-space basin (mean over samples)" if name == "basin_sample" else "weight-space basin")
            ax.legend(fontsize=7)
        figures.append(save(fig, out_dir / f"{stem}_deep_basins.png"))

    # output-feature collapse and fooling
    ranks = [n for n in ("feature_rank_data", "feature_rank_noise") if n in series]
    fooling = [n for n in ("fooling_fraction", "noise_confidence") if n in series]
    if ranks or fooling:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
        for name in ranks:
            _band(axes[0], t, series[name], name.replace("feature_rank_", ""))
        axes[0].set(xscale="log", xlabel="t", ylabel="effective rank", title="last-hidden-layer feature rank")
        for name in fooling:
            _band(axes[1], t, series[name], name)
        axes[1].set(xscale="log", xlabel="t", ylabel="fraction / probability", ylim=(-0.05, 1.05),
                    title="fooling by noise inputs")
        for ax in axes:
            _mark(ax, grok)
            ax.legend(fontsize=7)
        figures.append(save(fig, out_dir / f"{stem}_deep_features.png"))

    # grokking
    numbers["grokking"] = grok
    if grok is None:
        lines += ["", "- grokking: accuracy_train / accuracy_test not recorded"]
    else:
        r = grok["n_replicas"]
        lines += ["", f"Grokking at accuracy level {grok['level']:g} (per replica: first crossing, interpolated "
                      f"linearly in log t between records; delay = t_test - t_train, ratio = t_test / t_train over "
                      f"replicas reaching both):", ""]
        lines += _table(("quantity", "mean", "median", "replicas"),
                        [("t_train", grok["t_train_mean"], grok["t_train_median"], f"{grok['n_train_reached']}/{r}"),
                         ("t_test", grok["t_test_mean"], grok["t_test_median"], f"{grok['n_test_reached']}/{r}"),
                         ("t_test - t_train", grok["delay_mean"], grok["delay_median"],
                          f"{grok['n_both_reached']}/{r}"),
                         ("t_test / t_train", grok["ratio_mean"], grok["ratio_median"],
                          f"{int(np.isfinite(grok['ratio']).sum())}/{r}")])
        if grok["before_train"]:
            lines += ["", "Across the transition (mean over replicas; 'before' = last record before t_train, "
                          "'at' = first record at or after t_test):", ""]
            lines += _table(("quantity", "before t_train", "at t_test"),
                            [(k, grok["before_train"][k], grok["at_test"][k]) for k in grok["before_train"]])
    return lines, numbers, figures


# -- a sweep of runs -----------------------------------------------------------------------------------
SWEEP_COLUMNS = ("accuracy_test", "accuracy_train", "test_error", "loss_test", "basin_sample", "basin_weight") + MODE_NAMES + (
    "feature_rank_data", "feature_rank_noise", "fooling_fraction")


def _axis_value(v):
    """Plain Python value of an axis entry (sweep files store numeric axes as float)."""
    if isinstance(v, (np.floating, float)):
        return int(v) if float(v).is_integer() else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _log_axis(values) -> bool:
    nums = [v for v in values if _is_number(v)]
    return len(nums) == len(values) and min(nums) > 0 and max(nums) / min(nums) > 10


def deep_sweep_section(path, out_dir, plt) -> tuple[list[str], dict]:
    """Markdown lines and PNG figures of a merged sweep file of deep-MLP runs; returns (lines, numbers).

    Per stored point, at its last record: mean (and s.e. for accuracy_test) over replicas of the
    ``SWEEP_COLUMNS`` (accuracy_test, accuracy_train, test_error, basin_sample averaged over sources,
    basin_weight, layer-mean mode fractions, feature ranks, fooling_fraction). For each axis whose
    value differs between points: the same quantities per axis value, pooling the replicas of every
    point with that value (so other axes, e.g. seeds, are averaged over), drawn against the axis
    (log x when it spans more than a decade), with ``best`` (the value maximising the mean test
    accuracy), ``best_accuracy_test`` (+ ``best_accuracy_test_se``) and ``double_descent``'s
    ``interpolation_threshold`` (mean train accuracy >= 0.99), ``test_error_peak`` and
    ``peak_near_threshold`` (factor 2).

    numbers: ``points`` [ {group, axis values..., q: mean, accuracy_test_se, n_replicas} ],
    ``varying_axes`` [names], ``axes`` {axis: {values: [...], q: [...] per value, accuracy_test_se:
    [...], best, best_accuracy_test, best_accuracy_test_se, interpolation_threshold, test_error_peak,
    peak_near_threshold}}.
    """
    lines, numbers, figures = deep_sweep_parts(path, out_dir, plt)
    return lines + gallery(figures), numbers


def deep_sweep_parts(path, out_dir, plt) -> tuple[list[str], dict, list[str]]:
    """``deep_sweep_section`` as (lines without the figures' images, numbers, figure paths)."""
    from dynsim.sweep import sweep_failures, sweep_points

    out_dir = Path(out_dir)
    stem = Path(path).stem
    points = sweep_points(path)
    axes = list(points[0][1]) if points else []
    rows, finals = [], []
    for group, values in points:
        with RunReader(path, group) as rd:
            series = deep_series(rd) if rd.n_records else {}
        final = {q: series[q][-1] for q in SWEEP_COLUMNS if q in series}  # [replica] at the last record
        row = dict(group=group, **{a: _axis_value(v) for a, v in values.items()})
        for q, v in final.items():
            mean, se, _ = mean_se(v[None, :])
            row[q] = float(mean[0])
            if q == "accuracy_test":
                row["accuracy_test_se"] = float(se[0])
        row["n_replicas"] = int(max((len(v) for v in final.values()), default=0))
        rows.append(row)
        finals.append(final)
    numbers = dict(points=rows, varying_axes=[], axes={}, not_completed=sweep_failures(path))
    lines = [f"## deep sweep {stem}: {len(rows)} completed points over {', '.join(axes) or 'no axes'}", ""]
    for name, values, code, message in numbers["not_completed"]:  # diverged or failed points are not merged
        where = ", ".join(f"{a} = {_fmt(_axis_value(v))}" for a, v in values.items())
        lines.append(f"- point {name} ({where}) not included: {code}: {message}")
    if numbers["not_completed"]:
        lines.append("")
    if not rows:
        return lines + ["- no completed points"], numbers, []
    columns = [q for q in SWEEP_COLUMNS if any(q in r for r in rows)]
    lines.append("Per point at the last record (mean over replicas; accuracy_test +- s.e.):")
    lines.append("")
    lines += _table(axes + columns + ["replicas"],
                    [[r[a] for a in axes]
                     + [f"{_fmt(r.get(q))} +- {_fmt(r.get('accuracy_test_se'))}" if q == "accuracy_test"
                        else r.get(q) for q in columns] + [r["n_replicas"]] for r in rows])
    figures = []
    for axis in axes:
        distinct = list(dict.fromkeys(r[axis] for r in rows))
        if len(distinct) < 2:
            continue
        numbers["varying_axes"].append(axis)
        values = sorted(distinct) if all(_is_number(v) for v in distinct) else distinct
        per = {"values": values}
        for q in columns:
            means, ses = [], []
            for v in values:
                pooled = [f[q] for r, f in zip(rows, finals) if r[axis] == v and q in f]
                mean, se, _ = mean_se(np.concatenate(pooled)[None, :]) if pooled else ([math.nan], [math.nan], 0)
                means.append(float(mean[0]))
                ses.append(float(se[0]))
            per[q] = means
            if q == "accuracy_test":
                per["accuracy_test_se"] = ses
        if "accuracy_test" in per:
            best, best_acc = best_value(values, per["accuracy_test"])
            per["best"], per["best_accuracy_test"] = best, best_acc
            per["best_accuracy_test_se"] = per["accuracy_test_se"][values.index(best)] if best is not None else math.nan
            per.update(double_descent(values, per.get("accuracy_train", [math.nan] * len(values)),
                                      per["test_error"], test_loss=per.get("loss_test")))
        numbers["axes"][axis] = per
        lines += ["", f"### against {axis} (pooled over the other axes)", ""]
        lines += _table([axis] + columns, [[v] + [per[q][k] for q in columns] for k, v in enumerate(values)])
        if "best" in per:
            lines += ["", f"- best {axis} = {_fmt(per['best'])}: mean test accuracy {_fmt(per['best_accuracy_test'])} "
                          f"+- {_fmt(per['best_accuracy_test_se'])}",
                      f"- interpolation threshold (smallest {axis} with mean train accuracy >= "
                      f"{INTERPOLATION_LEVEL:g}): {_fmt(per['interpolation_threshold'])}; test-error peak at "
                      f"{axis} = {_fmt(per['test_error_peak'])}; peak within a factor {PEAK_FACTOR:g} of the "
                      f"threshold: {_fmt(per['peak_near_threshold'])}"
                      + (f"; test-loss peak at {axis} = {_fmt(per['test_loss_peak'])} (near the threshold: "
                         f"{_fmt(per['loss_peak_near_threshold'])})" if "test_loss_peak" in per else ""),
                      "  (a peak is the largest mean value at or after the lowest point below the threshold, the "
                      "bottom of the classical U; none when nothing beyond that bottom is higher)"]
        figures.append(_sweep_figure(plt, axis, per, columns, out_dir / f"{stem}_deep_{axis.replace('.', '_')}.png"))
    return lines, numbers, figures


def _sweep_figure(plt, axis, per, columns, path):
    values = per["values"]
    numeric = all(_is_number(v) for v in values)
    x = np.asarray(values, dtype=float) if numeric else np.arange(len(values))
    panels = [("accuracy", ("accuracy_train", "accuracy_test")), ("test error", ("test_error",)),
              ("test loss", ("loss_test",)),
              ("sample-space basin", ("basin_sample",)), ("weight-space basin", ("basin_weight",)),
              ("neuron modes (layer mean)", MODE_NAMES), ("feature rank", ("feature_rank_data", "feature_rank_noise")),
              ("fooling fraction", ("fooling_fraction",))]
    panels = [(title, [q for q in qs if q in columns]) for title, qs in panels]
    panels = [(title, qs) for title, qs in panels if qs]
    ncol = 4
    nrow = max(1, math.ceil(len(panels) / ncol))
    fig, axs = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 3.0 * nrow), squeeze=False)
    for ax, (title, qs) in zip(axs.flat, panels):
        for q in qs:
            y = np.asarray(per[q], dtype=float)
            if q == "accuracy_test":
                ax.errorbar(x, y, yerr=np.nan_to_num(np.asarray(per["accuracy_test_se"], dtype=float)), marker="o",
                            capsize=2, label="test")
            else:
                ax.plot(x, y, marker="o", label=MODE_LABELS.get(q, q.replace("accuracy_", "").replace(
                    "feature_rank_", "")))
        if title in ("test error", "test loss"):
            peak_key = "test_error_peak" if title == "test error" else "test_loss_peak"
            for key, style in (("interpolation_threshold", "--"), (peak_key, ":")):
                v = per.get(key)
                if v is not None and numeric:
                    ax.axvline(float(v), color="k", linestyle=style, linewidth=0.8, label=key.replace("_", " "))
        ax.set(title=title, xlabel=axis)
        if _log_axis(values):
            ax.set_xscale("log")
            ax.minorticks_off()  # the minor labels of a log axis overlap the axis values
        if not numeric or len(values) <= 8:
            ax.set_xticks(x, [_fmt(v) for v in values])
        ax.legend(fontsize=6)
    for ax in list(axs.flat)[len(panels):]:
        ax.axis("off")
    return save(fig, path)


def _mode_profile_figure(plt, profiles: dict, t, stem, out_dir) -> str:
    """Layer x time heat maps (mean over replicas) of the order-preserving and flat fractions and, where
    recorded, of the fraction of samples in the high-gain part: how a network allocates its neurons
    between the modes, layer by layer, over training."""
    keep = t > 0
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.2 * len(profiles), 3.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], profiles.items()):
        with warnings.catch_warnings():  # a record where every replica diverged
            warnings.simplefilter("ignore", RuntimeWarning)
            profile = np.nanmean(values[keep], axis=1)  # [record, layer]
        layers = np.arange(1, profile.shape[1] + 1)
        mesh = ax.pcolormesh(t[keep], layers, profile.T, vmin=0.0, vmax=1.0, cmap="viridis", shading="nearest")
        ax.set(xscale="log", xlabel="t", ylabel="hidden layer", title=MODE_LABELS[name])
        if len(layers) <= 16:
            ax.set_yticks(layers)
        fig.colorbar(mesh, ax=ax)
    return save(fig, out_dir / f"{stem}_deep_mode_profile.png")
