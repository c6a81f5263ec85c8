"""Depth and width optima and the framework's predictors (issue 21, item 3), from the merged sweep files to
the results page.

    python data/scripts/depth_width_predictors.py [--runs runs] [--results docs/results.md] [--figures docs/figures/depth_width]
                                                   [--merge-finished]

Two sweeps per task, read as one grid: ``data/configs/depth_width_grid_{digits,mnist1d}.toml`` (the reduced
grid: depths 1, 2, 4, 8 x widths 8, 32, 128) and ``depth_width_grid_{digits,mnist1d}_wide.toml`` (its
extension towards the issue's depths 1..100 x widths 2..512: an explicit list of points, cheapest first).
Relu MLPs, 5 replicas per point, SGD eta = 0.05, 4,000 steps, on the shipped digits (500 training, 1,000
test) and MNIST-1D (4,000 training, 1,000 test). A sweep with a declared point not finished is run
(``dynsim sweep``, which resumes the points it has), and each merged file is rebuilt from its point
files; ``--merge-finished`` runs nothing and merges the finished points as they are (for a sweep stopped
early: the points it has not finished are listed in the block as not run). A point whose replicas
diverged under ``run.on_divergence = "freeze"`` is a result: its other replicas ran to the end, and the
diverged ones are counted and left out of its means.

At the last record, per replica: test and training accuracy, and the quantities that use the training
data only: the sample-space basin (averaged over its samples), the weight-space basin, and the
neuron-mode allocation (layer-mean fraction of mixed (order-breaking) neurons, and of the samples in the
high-gain part). Rewrites the block ``depth_width`` of the results page, with the cost of the issue's
full grid on this machine when ``runs/depth_width_cost.json`` (``depth_width_cost.py``) is there.

Expected from the seed before the runs (Lin et al., ../shared/papers/companions.md: the basins'
sizes characterise generalisation and identify optimal depth and width): across the 12 configurations
of a task, both basins rank-correlate positively with test accuracy, and the configuration with the
largest basin is the test-accuracy optimum (or one not resolved from it). The seed ties the mode
allocation to the optimum without a stated sign: no direction is expected for the two mode quantities,
whose correlations are reported with both signs and whose "pick" is their largest value by convention.
(Stated for the reduced grid before its runs; the extended grid is held to the same statement, unchanged.)

Statistics. Replicas are the independent samples (the configurations are not: a correlation over the
configurations is one number per resample). Rank correlation: Spearman rho between the configurations'
replica means of the predictor and of the test accuracy, with a 95 % percentile interval from a
bootstrap that resamples each configuration's replicas independently. Optimum: the configuration of
highest mean test accuracy, with the configurations whose bootstrap interval overlaps its own; a
predictor's pick is its own largest mean, and "agrees" counts the resamples in which the pick is the
optimum of the same resample. A configuration whose mean training accuracy is below 0.9 counts as not
trained (on MNIST-1D that includes narrow nets that underfit, not only deep ones that fail to train):
the statistics are given over all configurations and again over the trained ones only.
"""
import json
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"digits": "8x8 digits", "mnist1d": "MNIST-1D"}
# the sweeps read as one grid per task: the reduced grid, then its extension
SWEEPS = ("depth_width_grid_{task}", "depth_width_grid_{task}_wide")
AXES = ("model.depth", "model.width")
# (name, label, expected sign of its association with test accuracy; None: none stated)
PREDICTORS = (("basin_sample", "sample-space basin", +1), ("basin_weight", "weight-space basin", +1),
              ("mode_order_breaking", "mixed (order-breaking) fraction", None),
              ("mode_gain_fraction", "share of samples in the high-gain part", None))
N_BOOT = 2000
TRAINED = 0.9  # mean training accuracy below which a configuration counts as not trained
# the full grid, whose cost the block states
FULL_DEPTHS = (1, 2, 4, 8, 16, 32, 64, 100)
FULL_WIDTHS = (2, 8, 32, 128, 512)


def _point_states(sweep) -> list[tuple[object, str, bool]]:
    """(point, state of its file, whether it is a result) of every declared point of ``sweep``: a result
    is a completed point, or one that ended diverged under ``on_divergence = "freeze"`` (its finite
    replicas ran to the end)."""
    from dynsim import kinds
    from dynsim.store import StoreError

    out = []
    for p in sweep.points:
        path, code = sweep.point_path(p), "pending"
        if path.exists():
            try:
                code = kinds.kind_of(p.config).status(path)
            except StoreError:
                code = "unreadable"
        out.append((p, code, code == "completed" or (code == "diverged" and p.config.run.on_divergence == "freeze")))
    return out


def merge_points(sweep_toml, output=None) -> Path:
    """Merge a sweep's finished point files (``_point_states``) into its merged file without running
    anything (``dynsim sweep`` merges the completed ones only); every other declared point is listed with
    its state and no data. The merged file's path."""
    from dynsim.store import write_sweep_file
    from dynsim.sweep import load_sweep

    sweep = load_sweep(sweep_toml, output=output)
    points = [(p.name, p.values, code, "", sweep.point_path(p) if kept else None)
              for p, code, kept in _point_states(sweep)]
    return write_sweep_file(sweep.merged_path, sweep_file=sweep.path, axes=sweep.axes, points=points)


def ensure_sweep(sweep_toml, output, run_missing=True) -> Path:
    """The merged file of a sweep: rebuilt from its point files where they are here (so that its frozen
    diverged points are in it), after running the sweep where a declared point is not finished and
    ``run_missing`` (``run_sweep``, as ``dynsim sweep`` runs it: it resumes the points it has and skips
    the finished ones, diverged ones included); a merged file without its point folder is kept as it is."""
    from dynsim.sweep import failed_points, load_sweep, run_sweep

    sweep = load_sweep(sweep_toml, output=output)
    if sweep.merged_path.exists() and not (sweep.output / "points").exists():
        return sweep.merged_path
    if run_missing and not all(kept for _, _, kept in _point_states(sweep)):
        failed = failed_points(run_sweep(sweep))
        if failed:
            raise SystemExit(f"{sweep_toml}: points failed: {failed}")
    return merge_points(sweep_toml, output)


def grid(paths, axes=AXES) -> dict:
    """{configs: [(axis values)], name: [config, replica], source: [config], missing: [(axis values)]} at the
    last record of one merged sweep file or several read as one grid: accuracies, basins (the sample basin
    averaged over its samples) and the layer-mean mode fractions; ``source`` is the index of each
    configuration's file in ``paths``, and ``missing`` lists the declared points without data.
    A configuration in two files is refused (the extension must not repeat the reduced grid)."""
    import h5py

    from dynsim.store import RunReader, sweep_points

    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    configs, sources, values, missing = [], [], {}, []
    names = ("accuracy_test", "accuracy_train") + tuple(name for name, _, _ in PREDICTORS)
    for source, path in enumerate(paths):
        for group, point in sweep_points(path):
            config = tuple(point[a] for a in axes)
            if config in configs:
                raise ValueError(f"{_label(config)} is in more than one of {', '.join(map(str, paths))}")
            with RunReader(path, group) as rd:
                for name in names:
                    last = np.asarray(rd.observable(name)[-1], dtype=float)  # [replica] or [replica, source|layer]
                    values.setdefault(name, []).append(last if last.ndim == 1 else _nanmean(last, axis=1))
            configs.append(config)
            sources.append(source)
        with h5py.File(path, "r") as f:
            stored = set(f["points"]) if "points" in f else set()
        for name, point, _, _ in _declared(path):
            if name not in stored:
                missing.append(tuple(point[a] for a in axes))
    order = sorted(range(len(configs)), key=lambda k: configs[k])
    out = {name: np.array([v[k] for k in order]) for name, v in values.items()}
    out["configs"] = [configs[k] for k in order]
    out["source"] = np.array([sources[k] for k in order], dtype=int)
    out["missing"] = sorted(missing)
    return out


def _declared(path) -> list:
    """(point, axis values, status, message) of every point a merged sweep file lists."""
    from dynsim.store import sweep_failures, sweep_points

    listed = [(group.split("/")[-1], values, "completed", "") for group, values in sweep_points(path)]
    return listed + sweep_failures(path)


def subset(g: dict, keep) -> dict:
    """The grid ``g`` restricted to the configurations where ``keep`` [config] is true."""
    keep = np.asarray(keep, bool)
    out = {name: v[keep] for name, v in g.items() if isinstance(v, np.ndarray)}
    out["configs"] = [c for c, k in zip(g["configs"], keep) if k]
    out["missing"] = g.get("missing", [])
    return out


def _spearman(a, b) -> float:
    from scipy.stats import rankdata

    with np.errstate(invalid="ignore", divide="ignore"):  # constant ranks (a tie everywhere): NaN, skipped
        return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def _resamples(n_configs, n_replicas, n_boot, seed):
    """[boot, config, replica] replica indices, drawn independently per configuration."""
    return np.random.default_rng(seed).integers(0, n_replicas, (n_boot, n_configs, n_replicas))


def _nanmean(values, axis):
    """Mean over the non-NaN entries (a diverged replica's are NaN); NaN where none is,
    without numpy's warning: such a mean is reported as missing, not an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def _boot_means(values, index):
    """[boot, config] means of values [config, replica] over the resampled replicas (NaN: a diverged
    replica, left out; a resample of only diverged replicas has no mean and is skipped by the callers)."""
    rows = np.arange(values.shape[0])[None, :, None]
    return _nanmean(values[rows, index], axis=2)


def _nanargmax(rows) -> np.ndarray:
    """argmax along the last axis, NaN never the maximum."""
    return np.argmax(np.where(np.isnan(rows), -np.inf, rows), axis=-1)


def rank_correlation(predictor, accuracy, n_boot=N_BOOT, seed=0) -> tuple[float, float, float]:
    """Spearman rho of the configurations' mean predictor and mean test accuracy, [95 % bootstrap]."""
    predictor, accuracy = np.asarray(predictor, float), np.asarray(accuracy, float)
    # a configuration whose predictor is undefined in every replica (no mean) takes no rank
    defined = np.isfinite(_nanmean(predictor, axis=1)) & np.isfinite(_nanmean(accuracy, axis=1))
    predictor, accuracy = predictor[defined], accuracy[defined]
    rho = _spearman(_nanmean(predictor, axis=1), _nanmean(accuracy, axis=1))
    index = _resamples(*accuracy.shape, n_boot, seed)
    p, a = _boot_means(predictor, index), _boot_means(accuracy, index)
    boots = np.array([_spearman(p[b], a[b]) for b in range(n_boot)])
    return rho, float(np.nanpercentile(boots, 2.5)), float(np.nanpercentile(boots, 97.5))


def mean_interval(values, n_boot=N_BOOT, seed=0) -> np.ndarray:
    """[config, 3]: mean and 95 % bootstrap interval over each configuration's replicas."""
    values = np.asarray(values, float)
    boots = _boot_means(values, _resamples(*values.shape, n_boot, seed))
    with warnings.catch_warnings():  # a configuration of only diverged replicas: NaN, left out by the callers
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.column_stack([np.nanmean(values, axis=1), np.nanpercentile(boots, 2.5, axis=0),
                                np.nanpercentile(boots, 97.5, axis=0)])


def predictor_pick(predictor, accuracy, n_boot=N_BOOT, seed=0) -> tuple[int, float]:
    """(the configuration of the predictor's largest mean, the fraction of resamples in which the
    predictor's pick is that resample's test-accuracy optimum)."""
    predictor, accuracy = np.asarray(predictor, float), np.asarray(accuracy, float)
    index = _resamples(*accuracy.shape, n_boot, seed)
    agree = _nanargmax(_boot_means(predictor, index)) == _nanargmax(_boot_means(accuracy, index))
    return int(_nanargmax(_nanmean(predictor, axis=1))), float(agree.mean())


def optimum(accuracy) -> tuple[int, list[int]]:
    """(the configuration of highest mean test accuracy, the others whose interval overlaps its own)."""
    table = mean_interval(accuracy)
    best = int(_nanargmax(table[:, 0]))
    return best, [k for k in range(len(table)) if k != best and table[k, 2] >= table[best, 1]]


def _label(config) -> str:
    return f"depth {config[0]}, width {config[1]}"


def _labels(configs) -> str:
    return "; ".join(_label(c) for c in configs) or "none"


def _cell(t, digits=3) -> str:
    return f"{t[0]:.{digits}f} [{t[1]:.{digits}f}, {t[2]:.{digits}f}]"


def statistics(g: dict) -> list[str]:
    """The optimum, the predictor table and the findings of the configurations of ``g``."""
    acc, configs = g["accuracy_test"], g["configs"]
    table = mean_interval(acc)
    best, overlapping = optimum(acc)
    lines = [f"- Test-accuracy optimum: {_label(configs[best])}, {_cell(table[best])}; not resolved from it: "
             f"{_labels(configs[k] for k in overlapping)}.", "",
             "| predictor | expected sign | Spearman rho with test accuracy [CI] | its pick | test acc. there | "
             "resamples in which the pick is the optimum |", "|---|---|---|---|---|---|"]
    for name, label, sign in PREDICTORS:
        rho = rank_correlation(g[name], acc)
        pick, agree = predictor_pick(g[name], acc)
        expected = {1: "+", -1: "-", None: "none stated"}[sign]
        lines.append(f"| {label} | {expected} | {rho[0]:+.2f} [{rho[1]:+.2f}, {rho[2]:+.2f}] | "
                     f"{_label(configs[pick])} | {_cell(table[pick])} | {agree:.2f} |")
    return lines + [""] + findings(g)


def markdown(grids: dict, sources: str = "`runs/depth_width_grid_{digits,mnist1d}.h5`", cost: dict | None = None) -> str:
    from analysis.blocks import markers

    begin, end = markers("depth_width")
    lines = [begin, "", f"Generated by `python data/scripts/depth_width_predictors.py` from {sources}: values at "
             "the last record, mean [95% bootstrap interval over the replicas of each configuration]; rank "
             "correlations across the configurations with intervals from the same bootstrap (replicas "
             "resampled per configuration).", ""]
    for task, g in grids.items():
        acc, configs = g["accuracy_test"], g["configs"]
        names = ("accuracy_test", "accuracy_train") + tuple(n for n, _, _ in PREDICTORS)
        table = {name: mean_interval(g[name]) for name in names}
        diverged = np.isnan(acc).sum(axis=1)
        finite = diverged < acc.shape[1]  # a configuration of only diverged replicas has no mean
        trained = finite & (np.nan_to_num(table["accuracy_train"][:, 0]) >= TRAINED)
        best, _ = optimum(subset(g, finite)["accuracy_test"])
        best = int(np.flatnonzero(finite)[best])
        lines += [f"**{TASKS.get(task, task)}** ({acc.shape[1]} replicas per configuration, {len(configs)} "
                  "configurations)", "",
                  "| depth | width | test acc. | train acc. | " + " | ".join(label for _, label, _ in PREDICTORS) + " |",
                  "|" + "---|" * (4 + len(PREDICTORS))]
        for k, config in enumerate(configs):
            if not finite[k]:
                continue
            digits = {"basin_sample": 2}
            cells = [_cell(table[n][k], digits.get(n, 3)) for n in names]
            mark = "**" if k == best else ""
            note = "" if trained[k] else " (not trained)"
            lines.append(f"| {mark}{config[0]}{mark} | {mark}{config[1]}{mark}{note} | " + " | ".join(cells) + " |")
        lines += [""]
        if (diverged > 0).any():
            lines += ["- Diverged replicas (frozen; left out of the means): " + "; ".join(
                f"{_label(c)}: {d} of {acc.shape[1]}" for c, d, f in zip(configs, diverged, finite) if d) + ".",
                ""]
        lines += [f"- Not trained (mean training accuracy below {TRAINED}): "
                  f"{_labels(c for c, t, f in zip(configs, trained, finite) if f and not t)}.", ""]
        if g.get("missing"):
            lines += [f"- Declared in the sweeps but not run (yet): {_labels(g['missing'])}.", ""]
        views = [(f"Over all {int(finite.sum())} configurations", finite),
                 (f"Over the {int(trained.sum())} trained configurations only", trained),
                 # the scope the expectation was stated for, before the extension
                 (f"Over the reduced grid's {int((g['source'] == 0).sum())} configurations, the scope of the "
                  "expectation stated before the runs", finite & (g["source"] == 0))]
        shown = []  # [title, keep]: a view of the same configurations as an earlier one is named there
        for title, keep in views:
            same = [view for view in shown if np.array_equal(view[1], keep)]
            if same:
                same[0][0] += f" (the same set as: {title[0].lower()}{title[1:]})"
            elif keep.sum() >= 3:
                shown.append([title, keep])
        for title, keep in shown:
            lines += [f"{title}:", ""] + statistics(subset(g, keep)) + [""]
    if cost:
        lines += cost_markdown(cost) + [""]
    lines.append(end)
    return "\n".join(lines)


def findings(g) -> list[str]:
    """The expectations of the docstring against the measured intervals."""
    acc, configs = g["accuracy_test"], g["configs"]
    best, overlapping = optimum(acc)
    out = []
    for name, label, sign in PREDICTORS:
        if sign is None:
            continue
        rho = rank_correlation(g[name], acc)
        pick, _ = predictor_pick(g[name], acc)
        verdict = ("as expected" if rho[1] > 0 else "the opposite of the expectation" if rho[2] < 0
                   else "not resolved")
        hit = "is the optimum" if pick == best else ("is not resolved from the optimum" if pick in overlapping
                                                       else "is not the optimum")
        out.append(f"- {label.capitalize()}: rank correlation with test accuracy {verdict} ({rho[0]:+.2f} "
                   f"[{rho[1]:+.2f}, {rho[2]:+.2f}]); its largest value, at {_label(configs[pick])}, {hit}.")
    return out


# -- the cost of the full grid -----------------------------------------------------------------------
def cost_law(rows) -> dict:
    """Per task, from single-run timings (``depth_width_cost.py``: 1 replica, 1 thread, two step counts per
    shape): the cost of a replica-step and of a run's fixed part (data, records, file) at each measured
    shape, and both as laws c0 + c1 depth + c2 n_params (seconds), fitted by non-negative least squares
    on the relative error (the costs span four decades)."""
    from scipy.optimize import nnls

    out = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        step = np.array([(r["seconds"][1] - r["seconds"][0]) / (r["steps"][1] - r["steps"][0]) for r in mine])
        fixed = np.array([r["seconds"][0] - r["steps"][0] * c for r, c in zip(mine, step)])
        x = np.array([[1.0, r["depth"], r["n_params"]] for r in mine])
        laws = {}
        for name, y in (("step", step), ("fixed", fixed)):
            y = np.maximum(y, 1e-9)  # a fixed part within the timing noise of zero
            laws[name], _ = nnls(x / y[:, None], np.ones(len(y)))
        out[task] = dict(step=laws["step"], fixed=laws["fixed"],
                         measured={(r["depth"], r["width"]): (c, f) for r, c, f in zip(mine, step, fixed)},
                         step_misfit=(float(np.min(x @ laws["step"] / step - 1)),
                                      float(np.max(x @ laws["step"] / step - 1))))
    return out


def point_seconds(law, depth, width, n_params, steps, replicas) -> tuple[float, bool]:
    """(single-thread seconds of one point of the grid, whether its shape was measured)."""
    if (depth, width) in law["measured"]:
        step, fixed = law["measured"][(depth, width)]
        return replicas * (steps * step + max(fixed, 0.0)), True
    x = np.array([1.0, depth, n_params])
    return replicas * (steps * float(x @ law["step"]) + float(x @ law["fixed"])), False


def _duration(seconds) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 \
        else f"{seconds:.0f} s"


def cost_markdown(cost: dict) -> list[str]:
    """The cost table of the full grid per task from ``cost`` ({rows, date, machine, steps, replicas,
    n_params: {task: {(depth, width): count}}, done: {task: set of (depth, width)}})."""
    laws = cost_law(cost["rows"])
    steps, replicas = cost["steps"], cost["replicas"]
    lines = [f"**Cost of the issue's full grid here** (depths {', '.join(map(str, FULL_DEPTHS))} x widths "
             f"{', '.join(map(str, FULL_WIDTHS))}, {replicas} replicas x {steps:,} steps per point), in "
             f"single-thread time per point, from single runs timed by `data/scripts/depth_width_cost.py` on "
             f"{cost['date']} ({cost['machine']}, shared: load average {cost['load_average'][0]:.1f} before, "
             f"{cost['load_average'][1]:.1f} after). m: shape measured (cost of a replica-step and of a run's "
             "fixed part from two step counts); other cells extrapolated by the law below; *: the point has run "
             "(in the tables above).", ""]
    for task, law in laws.items():
        total, todo = 0.0, 0.0
        rows = []
        for depth in FULL_DEPTHS:
            cells = []
            for width in FULL_WIDTHS:
                sec, measured = point_seconds(law, depth, width, cost["n_params"][task][(depth, width)], steps,
                                              replicas)
                done = (depth, width) in cost["done"][task]
                total += sec
                todo += 0.0 if done else sec
                cells.append(_duration(sec) + (" m" if measured else "") + (" *" if done else ""))
            rows.append(f"| {depth} | " + " | ".join(cells) + " |")
        c, f = law["step"], law["fixed"]
        lines += [f"{TASKS.get(task, task)}: per replica-step {c[0] * 1e6:.0f} us + {c[1] * 1e6:.1f} us x depth + "
                  f"{c[2] * 1e9:.1f} ns x parameters (from {law['step_misfit'][0] * 100:+.0f} % to "
                  f"{law['step_misfit'][1] * 100:+.0f} % of the measured shapes' cost), per run {f[0]:.2f} s + {f[1] * 1e3:.1f} ms x depth + "
                  f"{f[2] * 1e6:.1f} us x parameters; the whole grid {_duration(total)} of one core, of which "
                  f"{_duration(todo)} not run.", "",
                  "| depth | " + " | ".join(f"width {w}" for w in FULL_WIDTHS) + " |",
                  "|---|" + "---|" * len(FULL_WIDTHS)] + rows + [""]
    return lines


def load_cost(path, grids: dict) -> dict | None:
    """The timings of ``depth_width_cost.py`` with what the cost table needs from the configs and grids;
    None without the timings file."""
    from depth_width_cost import n_params  # noqa: E402 - the sibling script, on sys.path in main
    import tomllib

    path = Path(path)
    if not path.exists():
        return None
    cost = json.loads(path.read_text())
    base = tomllib.loads((ROOT / "data" / "configs" / "depth_width_grid_digits.toml").read_text())["base"]["run"]
    cost.update(steps=base["steps"], replicas=base["replicas"],
                n_params={task: {(d, w): n_params(task, d, w) for d in FULL_DEPTHS for w in FULL_WIDTHS}
                          for task in {r["task"] for r in cost["rows"]}},
                done={task: set(g["configs"]) for task, g in grids.items()})
    return cost


def figure(grids: dict, out_dir) -> list[str]:
    """Per task, heat maps over depth x width of the mean test accuracy and of the two basins (replica
    means at the last record; blank: a point not run), the test-accuracy optimum outlined in each."""
    from analysis.figures import pyplot, save

    plt = pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    panels = (("accuracy_test", "test accuracy"),) + tuple((n, label) for n, label, sign in PREDICTORS if sign)
    for task, g in grids.items():
        depths = sorted({c[0] for c in g["configs"]} | {c[0] for c in g["missing"]})
        widths = sorted({c[1] for c in g["configs"]} | {c[1] for c in g["missing"]})
        best = g["configs"][optimum(g["accuracy_test"])[0]]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
        for ax, (name, label) in zip(axes, panels):
            table = np.full((len(depths), len(widths)), np.nan)
            for config, values in zip(g["configs"], g[name]):
                table[depths.index(config[0]), widths.index(config[1])] = _nanmean(values, axis=0)
            image = ax.imshow(table, origin="lower", aspect="auto", cmap="viridis")
            fig.colorbar(image, ax=ax, shrink=0.85)
            ax.add_patch(plt.Rectangle((widths.index(best[1]) - 0.5, depths.index(best[0]) - 0.5), 1, 1,
                                       fill=False, edgecolor="C3", lw=2))
            ax.set_xticks(range(len(widths)), [str(w) for w in widths], fontsize=7)
            ax.set_yticks(range(len(depths)), [str(d) for d in depths], fontsize=7)
            ax.set_xlabel("width")
            ax.set_ylabel("depth")
            ax.set_title(label, fontsize=9)
        fig.suptitle(f"{TASKS.get(task, task)}: replica means at the last record (red: the test-accuracy optimum; blank: "
                     "not run)", fontsize=9)
        written.append(save(fig, out_dir / f"depth_width_{task}.png"))
    return written


def main(argv=None) -> int:
    import argparse

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from analysis.blocks import results_arguments, write_blocks

    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--merge-finished", action="store_true")
    flags, rest = own.parse_known_args(argv)
    args = results_arguments(__doc__, ROOT, rest, figures="docs/figures/depth_width")
    grids = {}
    for task in TASKS:
        paths = []
        for pattern in SWEEPS:
            name = pattern.format(task=task)
            paths.append(ensure_sweep(ROOT / "data" / "configs" / f"{name}.toml", args.runs / name,
                                      run_missing=not flags.merge_finished))
        grids[task] = grid(paths)
    sources = "`runs/depth_width_grid_{digits,mnist1d}.h5` and `runs/depth_width_grid_{digits,mnist1d}_wide.h5`"
    cost = load_cost(args.runs / "depth_width_cost.json", grids)
    write_blocks(args.results, {"depth_width": markdown(grids, sources, cost)})
    figure(grids, args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
