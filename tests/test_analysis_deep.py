"""``analysis.deep``: the grokking and double-descent logic on arrays with known answers, and the
numbers of the deep report sections on real (tiny) deep-MLP runs and a merged sweep, each checked
against a NumPy recomputation from the arrays read back with ``RunReader``."""
import math
from pathlib import Path

import numpy as np
import pytest

from analysis.deep import (deep_run_section, deep_sweep_section, double_descent, first_crossing, grokking_delay,
                           grokking_from_arrays, interpolation_threshold, peak_near_threshold)
from analysis.figures import pyplot as _plt
from analysis.report import write_report
from analysis.sections import plan_report
from dynsim.kinds import make_runner, parse_config
from dynsim.store import RunReader, StoreError
from dynsim.sweep import sweep_points

from conftest import merged_sweep

ROOT = Path(__file__).resolve().parents[1]

# Small enough to run in about a second each once the deep kernels are compiled; the separation of
# the run's Gaussian clusters makes train and test accuracy both pass 0.85 within 200 steps, and the
# sweep's 16 training samples with 25% flipped labels are interpolated at width 16 but not at 2 or 4.
_RECORD = """
[record]
n_records = 12
basin_samples = 2
noise_inputs = 8
weight_basin_samples = 16
basin_directions = 4
basin_bisections = 6
"""
RUN_TOML = """
[run]
seed = 11
replicas = 3
steps = 200
[model]
kind = "mlp"
input_dim = 6
depth = 2
width = 16
[task]
kind = "gaussian_mixture"
classes = 3
n_train = 32
n_test = 64
separation = 5.0
[training]
method = "sgd"
eta = 0.1
batch_size = 8
""" + _RECORD
SWEEP_TOML = """
output = "sweep"
[base.run]
seed = 11
replicas = 3
steps = 200
[base.model]
kind = "mlp"
input_dim = 6
depth = 1
width = 4
[base.task]
kind = "gaussian_mixture"
classes = 3
n_train = 16
n_test = 64
label_noise = 0.25
separation = 3.0
[base.training]
method = "sgd"
eta = 0.3
batch_size = 8
""" + _RECORD.replace("[record]", "[base.record]") + """
[axes]
"model.width" = [2, 4, 16]
"run.seed" = [11, 12]
"""


@pytest.fixture(scope="module")
def deep_files(tmp_path_factory):
    """One deep run and one merged 6-point sweep (width x seed), through the real writer and merge."""
    tmp = tmp_path_factory.mktemp("deep")
    run = tmp / "run.h5"
    assert make_runner(parse_config(RUN_TOML)).run(run, progress=False).ok
    return run, merged_sweep(tmp, SWEEP_TOML)


# -- pure logic on synthetic arrays --------------------------------------------------------------------
def test_first_crossing_and_grokking_on_synthetic_arrays():
    t = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    train = np.array([[0.1, 0.96, np.nan],
                      [0.5, 0.97, 0.2],
                      [0.9, 0.97, 0.96],
                      [1.0, 1.0, 1.0],
                      [1.0, 1.0, 1.0]])
    test = np.array([[0.1, 0.1, 0.1],
                     [0.2, 0.96, 0.2],
                     [0.3, 0.9, 0.3],
                     [0.5, 1.0, 0.4],
                     [0.95, 1.0, 0.5]])
    times, index = first_crossing(t, train, 0.95)
    # replica 0: between 0.9 at t=10 and 1.0 at t=100, halfway in value -> sqrt(10 * 100); replica 1 at
    # record 0 (t = 0, no interpolation); replica 2: from 0.2 at t=1 to 0.96 at t=10, w = 0.75 / 0.76
    assert index.tolist() == [3, 0, 2]
    assert times == pytest.approx([math.sqrt(1000.0), 0.0, 10.0 ** (0.75 / 0.76)], rel=1e-12)
    plain, _ = first_crossing(t, train, 0.95, interpolate=False)
    assert plain.tolist() == [100.0, 0.0, 10.0]
    basin = np.arange(15.0).reshape(5, 3)  # value = 3 * record + replica
    g = grokking_from_arrays(t, train, test, 0.95, extras={"basin": basin})
    # test: replica 0 from 0.5 to exactly 0.95 (w = 1) -> t = 1000; replica 1 at t = 1 after t = 0 (no log)
    assert g["t_test"][:2] == pytest.approx([1000.0, 1.0]) and math.isnan(g["t_test"][2])
    assert g["n_train_reached"] == 3 and g["n_test_reached"] == 2 and g["n_both_reached"] == 2
    assert g["delay"][:2] == pytest.approx([1000.0 - math.sqrt(1000.0), 1.0])
    assert g["ratio"][0] == pytest.approx(1000.0 / math.sqrt(1000.0)) and np.isnan(g["ratio"][1:]).all()
    assert g["delay_median"] == pytest.approx(np.median(g["delay"][:2]))
    assert g["ratio_mean"] == pytest.approx(math.sqrt(1000.0)) and g["t_train_mean"] == pytest.approx(np.mean(times))
    # before t_train: records 2 (replica 0) and 1 (replica 2); replica 1 crossed at record 0 -> left out
    assert g["before_train"]["basin"] == pytest.approx((3 * 2 + 0 + 3 * 1 + 2) / 2)
    # at t_test: record 4 (replica 0) and record 1 (replica 1)
    assert g["at_test"]["basin"] == pytest.approx((3 * 4 + 0 + 3 * 1 + 1) / 2)


def _lin(t0, t1, v0, v1, level=0.95):
    """The crossing of level on the straight line through (log t0, v0), (log t1, v1)."""
    return math.exp(math.log(t0) + (level - v0) / (v1 - v0) * (math.log(t1) - math.log(t0)))


def test_double_descent_numbers_on_synthetic_arrays():
    values = [1, 2, 4, 8, 16]
    # underfitting descent (0.5 -> 0.3), second peak 0.45 at the threshold 4, then the second descent
    dd = double_descent(values, [0.5, 0.8, 0.991, 1.0, 1.0], [0.5, 0.3, 0.45, 0.35, 0.2], test_loss=[3, 2, 2.5, 1, 1])
    assert dd == {"interpolation_threshold": 4, "test_error_peak": 4, "peak_near_threshold": True,
                  "test_loss_peak": 4, "loss_peak_near_threshold": True}
    dd = double_descent(values, [0.5, 0.8, 0.991, 1.0, 1.0], [0.3, 0.4, 0.1, 0.35, 0.5])
    assert dd["test_error_peak"] == 16 and dd["peak_near_threshold"] is False
    # a curve that only descends beyond its threshold has no second-descent peak, whatever its largest value
    assert double_descent(values, [1.0] * 5, [0.8, 0.5, 0.3, 0.2, 0.1])["test_error_peak"] is None
    assert double_descent(values, [0.5] * 5, [0.3] * 5)["interpolation_threshold"] is None
    assert interpolation_threshold([16, 1, 4], [1.0, 0.5, 0.995]) == 4  # the smallest value, whatever the order
    assert interpolation_threshold([1, 2], [0.98999, np.nan]) is None
    assert peak_near_threshold(8, 4) is True and peak_near_threshold(2, 4) is True
    assert peak_near_threshold(8.01, 4) is False and peak_near_threshold(1.99, 4) is False
    assert peak_near_threshold(3, None) is None


# -- real files ----------------------------------------------------------------------------------------
def _hand_crossing(t, acc, level):
    """Reference: a plain loop over records, interpolating log t linearly in the accuracy."""
    out, idx = [], []
    for r in range(acc.shape[1]):
        found = math.nan, -1
        for i in range(len(t)):
            if acc[i, r] >= level:
                if i > 0 and t[i - 1] > 0:
                    found = _lin(t[i - 1], t[i], acc[i - 1, r], acc[i, r], level), i
                else:
                    found = t[i], i
                break
        out.append(found[0])
        idx.append(found[1])
    return np.array(out), np.array(idx)


@pytest.mark.parametrize("level", [0.85, 0.95])
def test_grokking_delay_matches_a_hand_computation(deep_files, level):
    run, _ = deep_files
    with RunReader(run) as rd:
        t = rd.times
        train, test = rd.observable("accuracy_train"), rd.observable("accuracy_test")
        basin_weight = rd.observable("basin_weight")
        dead = rd.observable("mode_dead").mean(axis=2)
        g = grokking_delay(rd, level)
    t_train, i_train = _hand_crossing(t, train, level)
    t_test, i_test = _hand_crossing(t, test, level)
    if level == 0.85:  # the run is chosen so that every replica passes both at this level
        assert np.isfinite(t_train).all() and np.isfinite(t_test).all()
    np.testing.assert_allclose(g["t_train"], t_train, rtol=1e-12)
    np.testing.assert_allclose(g["t_test"], t_test, rtol=1e-12)
    both = np.isfinite(t_train) & np.isfinite(t_test)
    assert g["n_both_reached"] == both.sum() and g["n_test_reached"] == np.isfinite(t_test).sum()
    if both.any():
        assert g["delay_mean"] == pytest.approx(np.mean(t_test[both] - t_train[both]), rel=1e-12)
        assert g["delay_median"] == pytest.approx(np.median(t_test[both] - t_train[both]), rel=1e-12)
        assert g["ratio_median"] == pytest.approx(np.median(t_test[both] / t_train[both]), rel=1e-12)
    ok = i_train >= 1
    assert g["before_train"]["basin_weight"] == pytest.approx(np.mean(basin_weight[i_train[ok] - 1, np.flatnonzero(ok)]))
    ok = i_test >= 0
    assert g["at_test"]["mode_dead"] == pytest.approx(np.mean(dead[i_test[ok], np.flatnonzero(ok)]))


def test_deep_run_section_numbers_figures_and_table(deep_files, tmp_path):
    run, _ = deep_files
    lines, numbers = deep_run_section(run, tmp_path, _plt(), level=0.85)
    with RunReader(run) as rd:
        test = rd.observable("accuracy_test")[-1]
        basin = rd.observable("basin_sample")[-1]
        modes = rd.observable("mode_order_breaking")[-1]
        ref = grokking_delay(rd, 0.85)
    assert numbers["final"]["accuracy_test"] == pytest.approx(test.mean())
    assert numbers["final_se"]["accuracy_test"] == pytest.approx(test.std(ddof=1) / math.sqrt(len(test)))
    assert numbers["final"]["test_error"] == pytest.approx(1 - test.mean())
    assert numbers["final"]["basin_sample"] == pytest.approx(basin.mean())  # equal sources per replica
    assert numbers["final"]["mode_order_breaking"] == pytest.approx(modes.mean())
    assert numbers["final_modes_per_layer"]["mode_order_breaking"] == pytest.approx(modes.mean(axis=0).tolist())
    assert numbers["depth"] == 2 and numbers["widths"] == [16, 16]
    assert numbers["grokking"]["t_test_median"] == pytest.approx(ref["t_test_median"])
    text = "\n".join(lines)
    assert f"| t_train | {ref['t_train_mean']:.4g} | {ref['t_train_median']:.4g} | 3/3 |" in text
    for fig in ("accuracy", "modes", "basins", "features"):
        png = tmp_path / f"run_deep_{fig}.png"
        assert png.exists() and png.stat().st_size > 5000 and f"({png.name})" in text


def test_deep_sweep_numbers_match_numpy(deep_files, tmp_path):
    _, merged = deep_files
    lines, numbers = deep_sweep_section(merged, tmp_path, _plt())
    points = sweep_points(merged)
    assert len(numbers["points"]) == 6 and numbers["varying_axes"] == ["model.width", "run.seed"]
    finals = []
    for (group, values), row in zip(points, numbers["points"]):
        with RunReader(merged, group) as rd:
            acc_test, acc_train = rd.observable("accuracy_test")[-1], rd.observable("accuracy_train")[-1]
        finals.append((values["model.width"], acc_train, acc_test))
        assert row["model.width"] == values["model.width"] and row["accuracy_test"] == pytest.approx(acc_test.mean())
        assert row["accuracy_test_se"] == pytest.approx(acc_test.std(ddof=1) / math.sqrt(3))
    widths = [2, 4, 16]
    train = np.array([np.mean(np.concatenate([a for w, a, _ in finals if w == v])) for v in widths])
    test = np.array([np.mean(np.concatenate([b for w, _, b in finals if w == v])) for v in widths])
    per = numbers["axes"]["model.width"]
    assert per["values"] == widths
    np.testing.assert_allclose(per["accuracy_test"], test, rtol=1e-12)
    np.testing.assert_allclose(per["test_error"], 1 - test, rtol=1e-12)
    assert per["best"] == widths[int(np.argmax(test))] and per["best_accuracy_test"] == pytest.approx(test.max())
    threshold = min((v for v, a in zip(widths, train) if a >= 0.99), default=None)
    assert threshold == 16  # the sweep is chosen so that only the widest net interpolates its noisy labels
    err = 1 - test  # reference: the largest error at or after the lowest one below the threshold
    below = [k for k, w in enumerate(widths) if w < threshold]
    bottom = min(below, key=lambda k: err[k]) if below else 0
    top = bottom + int(np.argmax(err[bottom:]))
    peak = widths[top] if top != bottom else None
    assert per["interpolation_threshold"] == threshold and per["test_error_peak"] == peak
    assert per["peak_near_threshold"] == (None if peak is None else threshold / 2 <= peak <= 2 * threshold)
    text = "\n".join(lines)
    assert f"best model.width = {per['best']}" in text
    assert (tmp_path / "sweep_deep_model_width.png").exists() and "(sweep_deep_model_width.png)" in text


def test_deep_sweeps_results_block_matches_the_files(deep_files):
    """data/scripts/deep_sweeps.py (results as code for section 8's sweeps): every point's mean equals the
    replicas' values read with h5py, its bootstrap interval brackets the mean, and the block is complete."""
    import importlib.util

    import h5py

    spec = importlib.util.spec_from_file_location("deep_sweeps", ROOT / "data" / "scripts" / "deep_sweeps.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    _, merged = deep_files
    rows, failures = script.sweep_rows(merged, "model.width")
    assert len(rows) == 6 and failures == [] and [r["value"] for r in rows] == sorted(r["value"] for r in rows)
    with h5py.File(merged, "r") as f:
        by_width = {}
        for group, values in sweep_points(merged):
            by_width.setdefault(values["model.width"], []).append(f[f"{group}/observables/accuracy_test"][-1])
    for row in rows:
        means = [np.mean(a) for a in by_width[row["value"]]]
        mean, low, high = row["accuracy_test"]
        assert any(mean == pytest.approx(m, abs=1e-15) for m in means) and low <= mean <= high
    text = script.markdown("width_sweep", rows, failures, "model.width", "sweep.h5")
    assert text.startswith("<!-- width_sweep:begin -->") and text.rstrip().endswith("<!-- width_sweep:end -->")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 6 and all(line.count("|") == table[0].count("|") for line in table)
    assert "nan" not in text.lower() and "highest mean test accuracy at width" in text


def test_write_report_dispatches_deep_runs_and_sweeps(deep_files, tmp_path):
    run, merged = deep_files
    # the registry tells a deep run and a sweep of them from the rest, and a missing file is an error
    assert plan_report(run).kind == "mlp" and not plan_report(run).sweep
    assert plan_report(merged).kind == "mlp" and plan_report(merged).sweep
    with pytest.raises(StoreError, match="no such file"):
        plan_report(tmp_path / "missing.h5")
    md = write_report([run, merged], tmp_path / "rep")
    text = md.read_text()
    assert "## deep sweep sweep: 6 completed points" in text and "## run: mlp L=2 N=16 relu" in text
    assert "Grokking at accuracy level 0.9 " in text
    assert "final training loss" not in text  # the one-hidden-layer summary was not used
    for png in ("run_deep_accuracy.png", "run_deep_basins.png", "sweep_deep_model_width.png",
                "sweep_deep_run_seed.png"):
        assert (tmp_path / "rep" / png).exists() and f"({png})" in text
