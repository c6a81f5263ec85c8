"""Grokking's mechanism with two hidden layers (issue 21, item 5), from run files to the results page.

    python data/scripts/grokking_mechanism.py [--runs runs] [--results docs/results.md] [--figures docs/figures/grokking_two_layer]

Runs ``data/configs/grokking_two_layer.toml`` and its control ``grokking_two_layer_no_decay.toml``, and
the one-layer pair ``grokking_modular{,_no_decay}.toml`` of section 8's first grokking subsection (a
complete file is kept, an interrupted one resumed), then per replica finds t_train and t_test, the
first times the training and the test accuracy reach 0.9 (``analysis.deep.first_crossing``,
interpolated in log t), and reads the per-layer neuron modes (order-preserving / dead (flat) /
mixed (order-breaking), and the mean fraction of samples in the high-gain part) and both basins at
the last record strictly before t_train ("before") and at the first record at or after t_test ("at
t_test"). It rewrites the block between ``<!-- grokking:begin -->`` and ``<!-- grokking:end -->`` of
the results page (and ``grokking_one_layer`` with the one-layer pair's table) and draws the two-layer
per-layer mode profile over time.

Expected from the seed before the runs (Lin et al., ../shared/papers/companions.md: grokking is among
what the mode distribution and the basins explain; the one-layer run of section 8: both basins grew
across the transition while the modes of its single layer could not move):
* with weight decay the net groks: t_test / t_train > 2.5 in every replica; without it, test
  accuracy stays below 0.2 to the end;
* both basins grow across the transition (at t_test minus before t_train > 0, resolved);
* the second hidden layer's modes move across the transition: its dead (flat) fraction rises (weight
  decay removes the units the memorising solution used and the generalising one does not need); the
  direction of the other fractions is not predicted;
* in the control, at the same records (replica r of the control shares its initialisation and batch
  draws with replica r of the decay run, and is read at that replica's records), the basins and the
  layer-2 modes do not make the same change.

Intervals: 95 % percentile bootstrap over replicas (the runs' replicas are independent
initialisations and batch draws on one data split); changes (at t_test minus before) are paired per
replica. A replica that never reaches a crossing is left out of the quantities that need it, and the
counts are given.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RUNS = ("grokking_two_layer", "grokking_two_layer_no_decay")
# The one-hidden-layer runs of issue 9 (one-hot inputs: the single layer's modes cannot move), as a
# block of their own with the same table and no findings (their expectations were the earlier section's).
ONE_LAYER_RUNS = ("grokking_modular", "grokking_modular_no_decay")
BEGIN, END = "<!-- grokking:begin -->", "<!-- grokking:end -->"
LEVEL = 0.9
N_BOOT = 4000
MODES = (("mode_order_preserving", "order-preserving"), ("mode_dead", "dead (flat)"),
         ("mode_order_breaking", "mixed (order-breaking)"), ("mode_gain_fraction", "samples in high-gain part"))
BASINS = (("basin_sample", "sample-space basin"), ("basin_weight", "weight-space basin"))


def read_run(path) -> dict:
    """Arrays of one run: t [record]; accuracies, basins [record, replica] (the sample basin averaged over its
    basin samples); modes [record, replica, layer]."""
    from dynsim.store import RunReader

    with RunReader(path) as reader:
        out = dict(t=np.asarray(reader.times, dtype=float))
        for name in ("accuracy_train", "accuracy_test", "param_norm", "basin_weight") + tuple(m for m, _ in MODES):
            if name in reader.observable_names:  # the one-layer runs do not record mode_gain_fraction
                out[name] = np.asarray(reader.observable(name), dtype=float)
        out["basin_sample"] = np.asarray(reader.observable("basin_sample"), dtype=float).mean(axis=2)
    return out


def _interval(values, seed=0):
    """(mean, low, high, n) over the finite values; a 95 % percentile bootstrap of the mean."""
    from analysis.blocks import bootstrap_mean

    v = np.asarray(values, dtype=float)
    return (*bootstrap_mean(v, n_boot=N_BOOT, seed=seed), int(np.isfinite(v).sum()))


def crossings(run: dict, level=LEVEL) -> dict:
    from analysis.deep import first_crossing

    t_train, i_train = first_crossing(run["t"], run["accuracy_train"], level)
    t_test, i_test = first_crossing(run["t"], run["accuracy_test"], level)
    both = np.isfinite(t_train) & np.isfinite(t_test)
    return dict(t_train=t_train, i_train=i_train, t_test=t_test, i_test=i_test,
                delay=np.where(both, t_test - t_train, np.nan), ratio=np.where(both, t_test / t_train, np.nan))


def at_records(values, index):
    """values [record, replica, ...] at record index[r] for every replica r (NaN where index < 0)."""
    values = np.asarray(values, dtype=float)
    out = np.full((values.shape[1],) + values.shape[2:], np.nan)
    for r, i in enumerate(index):
        if i >= 0:
            out[r] = values[i, r]
    return out


def transition(run: dict, i_before, i_at) -> dict:
    """{name: (before [replica, ...], at [replica, ...])} for the basins and the per-layer modes."""
    return {name: (at_records(run[name], i_before), at_records(run[name], i_at))
            for name in [b for b, _ in BASINS] + [m for m, _ in MODES] if name in run}


def measure(decay: dict, control: dict) -> dict:
    c = crossings(decay)
    i_before = np.where(c["i_train"] >= 1, c["i_train"] - 1, -1)
    i_at = c["i_test"]
    out = dict(crossings=c, control_crossings=crossings(control), decay=transition(decay, i_before, i_at),
               control=transition(control, i_before, i_at), layers=decay["mode_dead"].shape[2],
               replicas=decay["accuracy_train"].shape[1],
               control_final_test=control["accuracy_test"][-1], decay_final_test=decay["accuracy_test"][-1],
               t_end=float(decay["t"][-1]))
    return out


def _cell(t, digits=3):
    if not np.isfinite(t[0]):
        return "n/a"

    def fmt(x):
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.{digits}g}"
    return f"{fmt(t[0])} [{fmt(t[1])}, {fmt(t[2])}]"


def _change(before, at):
    return _interval(np.asarray(at) - np.asarray(before))


def _resolved(t):
    return "up" if t[1] > 0 else "down" if t[2] < 0 else "no resolved change"


def markdown(m: dict, block: str = "grokking", runs=RUNS, with_findings: bool = True) -> str:
    """The block of one pair of runs (``runs``: the run with weight decay, then its control)."""
    from analysis.blocks import markers

    begin, end = markers(block)
    c, cc = m["crossings"], m["control_crossings"]
    n = m["replicas"]
    lines = [begin, "", f"Generated by `python data/scripts/grokking_mechanism.py` from `runs/{runs[0]}.h5` and "
             f"`runs/{runs[1]}.h5`; mean [95 % bootstrap interval over replicas] (n = replicas "
             f"counted); crossings of accuracy {LEVEL} interpolated in log t (t = eta x steps, end t = {m['t_end']:g}). "
             "\"Before\" = the last record before the replica's training-accuracy crossing, \"at t_test\" = its first "
             "record at or after the test-accuracy crossing; the control is read at the same records of the same "
             "replica (same initialisation and batch draws, no weight decay).", "",
             "| run | t_train | t_test | delay t_test - t_train | ratio t_test / t_train | final test acc. | "
             "test crossing reached |", "|---|---|---|---|---|---|---|"]
    for label, cr, final in (("weight decay 0.003", c, m["decay_final_test"]),
                             ("no weight decay", cc, m["control_final_test"])):
        lines.append(f"| {label} | {_cell(_interval(cr['t_train']))} | {_cell(_interval(cr['t_test']))} | "
                     f"{_cell(_interval(cr['delay']))} | {_cell(_interval(cr['ratio']))} | {_cell(_interval(final))} | "
                     f"{int(np.isfinite(cr['t_test']).sum())}/{n} |")
    lines += ["", "| quantity | layer | before t_train | at t_test | change | control: before | control: at the same "
              "records | control change |", "|---|---|---|---|---|---|---|---|"]
    rows = [(name, label, None) for name, label in BASINS]
    rows += [(name, label, layer) for name, label in MODES for layer in range(m["layers"]) if name in m["decay"]]
    verdicts = {}
    for name, label, layer in rows:
        cells = []
        for run in ("decay", "control"):
            before, at = m[run][name]
            if layer is not None:
                before, at = before[:, layer], at[:, layer]
            change = _change(before, at)
            verdicts[(run, name, layer)] = change
            cells += [_cell(_interval(before)), _cell(_interval(at)), _cell(change)]
        lines.append(f"| {label} | {'-' if layer is None else layer + 1} | " + " | ".join(cells) + " |")
    lines += ([""] + findings(m, verdicts) if with_findings else []) + ["", end]
    return "\n".join(lines)


def findings(m, verdicts) -> list[str]:
    """The expectations of the docstring, each against its measured interval."""
    c = m["crossings"]
    ratio = c["ratio"]
    n = m["replicas"]
    out = []
    groks = np.isfinite(ratio) & (ratio > 2.5)
    out.append(f"- Grokking with weight decay (t_test / t_train > 2.5 in every replica): {int(groks.sum())}/{n} "
               f"replicas; {'as expected' if groks.all() else 'NOT in every replica'}.")
    final = _interval(m["control_final_test"])
    out.append(f"- Control never generalises (final test accuracy < 0.2): {final[0]:.3f} "
               f"[{final[1]:.3f}, {final[2]:.3f}]; {'as expected' if final[2] < 0.2 else 'NOT as expected'}.")
    for name, label in BASINS:
        d, k = verdicts[("decay", name, None)], verdicts[("control", name, None)]
        out.append(f"- {label.capitalize()} across the transition: {_resolved(d)} ({d[0]:+.3g} [{d[1]:+.3g}, {d[2]:+.3g}]; "
                   f"expected up: {'agrees' if d[1] > 0 else 'disagrees'}); control at the same records: "
                   f"{_resolved(k)} ({k[0]:+.3g} [{k[1]:+.3g}, {k[2]:+.3g}]).")
    last = m["layers"] - 1
    for name, label in MODES:
        d, k = verdicts[("decay", name, last)], verdicts[("control", name, last)]
        expected = ("; expected up: " + ("agrees" if d[1] > 0 else "disagrees")) if name == "mode_dead" else ""
        out.append(f"- Layer {last + 1} {label}: {_resolved(d)} ({d[0]:+.3g} [{d[1]:+.3g}, {d[2]:+.3g}]){expected}; "
                   f"control: {_resolved(k)} ({k[0]:+.3g} [{k[1]:+.3g}, {k[2]:+.3g}]).")
    return out


def figure(decay: dict, control: dict, m: dict, out_dir) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    layers = m["layers"]
    fig, axes = plt.subplots(2, layers + 1, figsize=(4 * (layers + 1), 6), sharex=True)
    t = decay["t"]
    keep = t > 0
    for row, (run, label) in enumerate(((decay, "weight decay 0.003"), (control, "no weight decay"))):
        ax = axes[row, 0]
        for name, color in (("accuracy_train", "C0"), ("accuracy_test", "C3")):
            v = run[name][keep]
            ax.plot(t[keep], v.mean(axis=1), color=color, label=name.replace("accuracy_", ""))
            ax.fill_between(t[keep], v.min(axis=1), v.max(axis=1), color=color, alpha=0.2)
        ax.set_ylabel(f"{label}\naccuracy (band: min-max)")
        ax.legend(fontsize=7)
        for layer in range(layers):
            ax = axes[row, layer + 1]
            for k, (name, mlabel) in enumerate(MODES):
                v = run[name][keep, :, layer]
                ax.plot(t[keep], v.mean(axis=1), color=f"C{k}", label=mlabel)
                ax.fill_between(t[keep], v.min(axis=1), v.max(axis=1), color=f"C{k}", alpha=0.2)
            ax.set_title(f"{label}: layer {layer + 1} modes", fontsize=9)
            ax.set_ylim(-0.02, 1.02)
        for ax in axes[row]:
            ax.set_xscale("log")
            for tt, style in ((np.nanmedian(m["crossings"]["t_train"]), ":"), (np.nanmedian(m["crossings"]["t_test"]), "--")):
                if np.isfinite(tt):
                    ax.axvline(tt, color="k", ls=style, lw=0.8)
    axes[0, 1].legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("t = eta x steps")
    fig.suptitle("grokking_two_layer: per-layer neuron modes over time (mean, min-max band over replicas; dotted: "
                 "median t_train, dashed: median t_test of the decay run)", fontsize=9)
    fig.tight_layout()
    path = out_dir / "mode_profile.png"
    fig.savefig(path, dpi=70)
    plt.close(fig)
    return str(path)


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from analysis.blocks import results_arguments, write_blocks
    from dynsim.kinds import ensure_run

    args = results_arguments(__doc__, ROOT, argv, figures="docs/figures/grokking_two_layer")
    runs = args.runs
    data = {}
    for name in RUNS + ONE_LAYER_RUNS:
        data[name] = read_run(ensure_run(ROOT / "data" / "configs" / f"{name}.toml", runs / f"{name}.h5"))
    m = measure(data[RUNS[0]], data[RUNS[1]])
    one_layer = measure(data[ONE_LAYER_RUNS[0]], data[ONE_LAYER_RUNS[1]])

    write_blocks(args.results, {"grokking": markdown(m),
                                "grokking_one_layer": markdown(one_layer, "grokking_one_layer", ONE_LAYER_RUNS,
                                                               with_findings=False)})
    figure(data[RUNS[0]], data[RUNS[1]], m, args.figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
