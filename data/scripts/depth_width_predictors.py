"""Depth and width optima and the framework's predictors (issue 21, item 3, reduced grid), from the merged
sweep files to the results page.

    python data/scripts/depth_width_predictors.py [--runs runs] [--results docs/results.md]

Runs ``dynsim sweep data/configs/depth_width_grid_{digits,mnist1d}.toml`` where the merged file is missing
(a sweep resumes the points it has): relu MLPs at depths 1, 2, 4, 8 x widths 8, 32, 128, 5 replicas per
point, SGD eta = 0.05, 4,000 steps, on the shipped digits (500 training, 1,000 test) and MNIST-1D (4,000
training, 1,000 test). At the last record, per replica: test and training accuracy, and the quantities
that use the training data only: the sample-space basin (averaged over its samples), the weight-space
basin, and the neuron-mode allocation (layer-mean fraction of mixed (order-breaking) neurons, and of the
samples in the high-gain part). Rewrites the block ``depth_width`` of the results page.

Expected from the seed before the runs (Lin et al., ../shared/papers/companions.md: the basins'
sizes characterise generalisation and identify optimal depth and width): across the 12 configurations
of a task, both basins rank-correlate positively with test accuracy, and the configuration with the
largest basin is the test-accuracy optimum (or one not resolved from it). The seed ties the mode
allocation to the optimum without a stated sign: no direction is expected for the two mode quantities,
whose correlations are reported with both signs and whose "pick" is their largest value by convention.

Statistics. Replicas are the independent samples (the configurations are not: a correlation over 12
configurations is one number per resample). Rank correlation: Spearman rho between the configurations'
replica means of the predictor and of the test accuracy, with a 95 % percentile interval from a
bootstrap that resamples each configuration's replicas independently. Optimum: the configuration of
highest mean test accuracy, with the configurations whose bootstrap interval overlaps its own; a
predictor's pick is its own largest mean, and "agrees" counts the resamples in which the pick is the
optimum of the same resample.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TASKS = {"digits": "8x8 digits", "mnist1d": "MNIST-1D"}
AXES = ("model.depth", "model.width")
# (name, label, expected sign of its association with test accuracy; None: none stated)
PREDICTORS = (("basin_sample", "sample-space basin", +1), ("basin_weight", "weight-space basin", +1),
              ("mode_order_breaking", "mixed (order-breaking) fraction", None),
              ("mode_gain_fraction", "share of samples in the high-gain part", None))
N_BOOT = 2000


def grid(path, axes=AXES) -> dict:
    """{configs: [(axis values)], name: [config, replica]} at the last record of a merged sweep file:
    accuracies, basins (the sample basin averaged over its samples) and the layer-mean mode fractions."""
    from dynsim.store import RunReader, sweep_points

    configs, values = [], {}
    names = ("accuracy_test", "accuracy_train") + tuple(name for name, _, _ in PREDICTORS)
    for group, point in sweep_points(path):
        with RunReader(path, group) as rd:
            for name in names:
                last = np.asarray(rd.observable(name)[-1], dtype=float)  # [replica] or [replica, source|layer]
                values.setdefault(name, []).append(last if last.ndim == 1 else np.nanmean(last, axis=1))
        configs.append(tuple(point[a] for a in axes))
    order = sorted(range(len(configs)), key=lambda k: configs[k])
    out = {name: np.array([v[k] for k in order]) for name, v in values.items()}
    out["configs"] = [configs[k] for k in order]
    return out


def _spearman(a, b) -> float:
    from scipy.stats import rankdata

    return float(np.corrcoef(rankdata(a), rankdata(b))[0, 1])


def _resamples(n_configs, n_replicas, n_boot, seed):
    """[boot, config, replica] replica indices, drawn independently per configuration."""
    return np.random.default_rng(seed).integers(0, n_replicas, (n_boot, n_configs, n_replicas))


def _boot_means(values, index):
    """[boot, config] means of values [config, replica] over the resampled replicas."""
    rows = np.arange(values.shape[0])[None, :, None]
    return np.nanmean(values[rows, index], axis=2)


def rank_correlation(predictor, accuracy, n_boot=N_BOOT, seed=0) -> tuple[float, float, float]:
    """Spearman rho of the configurations' mean predictor and mean test accuracy, [95 % bootstrap]."""
    predictor, accuracy = np.asarray(predictor, float), np.asarray(accuracy, float)
    rho = _spearman(np.nanmean(predictor, axis=1), np.nanmean(accuracy, axis=1))
    index = _resamples(*accuracy.shape, n_boot, seed)
    p, a = _boot_means(predictor, index), _boot_means(accuracy, index)
    boots = np.array([_spearman(p[b], a[b]) for b in range(n_boot)])
    return rho, float(np.nanpercentile(boots, 2.5)), float(np.nanpercentile(boots, 97.5))


def mean_interval(values, n_boot=N_BOOT, seed=0) -> np.ndarray:
    """[config, 3]: mean and 95 % bootstrap interval over each configuration's replicas."""
    values = np.asarray(values, float)
    boots = _boot_means(values, _resamples(*values.shape, n_boot, seed))
    return np.column_stack([np.nanmean(values, axis=1), np.percentile(boots, 2.5, axis=0),
                            np.percentile(boots, 97.5, axis=0)])


def predictor_pick(predictor, accuracy, n_boot=N_BOOT, seed=0) -> tuple[int, float]:
    """(the configuration of the predictor's largest mean, the fraction of resamples in which the
    predictor's pick is that resample's test-accuracy optimum)."""
    predictor, accuracy = np.asarray(predictor, float), np.asarray(accuracy, float)
    index = _resamples(*accuracy.shape, n_boot, seed)
    agree = np.argmax(_boot_means(predictor, index), axis=1) == np.argmax(_boot_means(accuracy, index), axis=1)
    return int(np.argmax(np.nanmean(predictor, axis=1))), float(agree.mean())


def optimum(accuracy) -> tuple[int, list[int]]:
    """(the configuration of highest mean test accuracy, the others whose interval overlaps its own)."""
    table = mean_interval(accuracy)
    best = int(np.argmax(table[:, 0]))
    return best, [k for k in range(len(table)) if k != best and table[k, 2] >= table[best, 1]]


def _label(config) -> str:
    return f"depth {config[0]}, width {config[1]}"


def _cell(t, digits=3) -> str:
    return f"{t[0]:.{digits}f} [{t[1]:.{digits}f}, {t[2]:.{digits}f}]"


def markdown(grids: dict) -> str:
    from analysis.blocks import markers

    begin, end = markers("depth_width")
    lines = [begin, "", "Generated by `python data/scripts/depth_width_predictors.py` from `runs/depth_width_grid_"
             "{digits,mnist1d}.h5`: values at the last record, mean [95% bootstrap interval over the replicas of "
             "each configuration]; rank correlations across the configurations with intervals from the same "
             "bootstrap (replicas resampled per configuration).", ""]
    for task, g in grids.items():
        acc, configs = g["accuracy_test"], g["configs"]
        table = {name: mean_interval(g[name]) for name in ("accuracy_test", "accuracy_train") +
                 tuple(n for n, _, _ in PREDICTORS)}
        best, overlapping = optimum(acc)
        lines += [f"**{TASKS.get(task, task)}** ({acc.shape[1]} replicas per configuration)", "",
                  "| depth | width | test acc. | train acc. | " + " | ".join(label for _, label, _ in PREDICTORS) + " |",
                  "|" + "---|" * (4 + len(PREDICTORS))]
        for k, config in enumerate(configs):
            digits = {"basin_sample": 2}
            cells = [_cell(table[n][k], digits.get(n, 3)) for n in ("accuracy_test", "accuracy_train")]
            cells += [_cell(table[n][k], digits.get(n, 3)) for n, _, _ in PREDICTORS]
            mark = "**" if k == best else ""
            lines.append(f"| {mark}{config[0]}{mark} | {mark}{config[1]}{mark} | " + " | ".join(cells) + " |")
        lines += ["", f"- Test-accuracy optimum: {_label(configs[best])}, {_cell(table['accuracy_test'][best])}; "
                  "not resolved from it: " + ("; ".join(_label(configs[k]) for k in overlapping) or "none") + ".", "",
                  "| predictor | expected sign | Spearman rho with test accuracy [CI] | its pick | test acc. there | "
                  "resamples in which the pick is the optimum |", "|---|---|---|---|---|---|"]
        for name, label, sign in PREDICTORS:
            rho = rank_correlation(g[name], acc)
            pick, agree = predictor_pick(g[name], acc)
            expected = {1: "+", -1: "-", None: "none stated"}[sign]
            lines.append(f"| {label} | {expected} | {rho[0]:+.2f} [{rho[1]:+.2f}, {rho[2]:+.2f}] | "
                         f"{_label(configs[pick])} | {_cell(table['accuracy_test'][pick])} | {agree:.2f} |")
        lines += [""] + findings(g) + [""]
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


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from analysis.blocks import results_arguments, write_blocks

    args = results_arguments(__doc__, ROOT, argv)
    grids = {}
    for task in TASKS:
        path = args.runs / f"depth_width_grid_{task}.h5"
        if not path.exists():  # the sweep config writes its merged file to runs/ and resumes its points
            subprocess.run([sys.executable, "-m", "dynsim.cli", "sweep",
                            str(ROOT / "data" / "configs" / f"depth_width_grid_{task}.toml")], check=True)
        grids[task] = grid(path)
    write_blocks(args.results, {"depth_width": markdown(grids)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
