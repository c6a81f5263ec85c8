"""data/scripts/depth_width_predictors.py (issue 21, item 3): the rank correlation against scipy's Spearman,
the bootstrap's agreement on arrays of known structure, and the block from a small merged depth x width
sweep read back against its files."""
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from dynsim.store import sweep_points

from conftest import assert_tables_complete, merged_sweep, results_script

SWEEP_TOML = """
output = "grid"
mode = "grid"
[axes]
"model.depth" = [1, 2]
"model.width" = [4, 12]
[base.run]
seed = 3
replicas = 3
steps = 150
[base.model]
kind = "mlp"
[base.task]
kind = "gaussian_mixture"
classes = 3
n_train = 24
n_test = 48
separation = 4.0
[base.training]
method = "sgd"
eta = 0.2
batch_size = 8
[base.record]
n_records = 3
observables = ["loss_train", "loss_test", "accuracy_train", "accuracy_test", "basin_sample", "basin_weight",
               "mode_order_preserving", "mode_dead", "mode_order_breaking", "mode_gain_fraction"]
basin_samples = 2
basin_directions = 4
basin_bisections = 6
weight_basin_directions = 2
weight_basin_samples = 24
noise_inputs = 6
"""


@pytest.fixture(scope="module")
def script():
    return results_script("depth_width_predictors")


def test_rank_correlation_is_spearman_of_the_means_and_its_interval_brackets_it(script):
    rng = np.random.default_rng(1)
    accuracy = np.linspace(0.5, 0.9, 8)[:, None] + 0.01 * rng.standard_normal((8, 5))
    predictor = -np.arange(8.0)[:, None] + 0.5 * rng.standard_normal((8, 5))
    rho, low, high = script.rank_correlation(predictor, accuracy, n_boot=300)
    assert rho == pytest.approx(spearmanr(predictor.mean(axis=1), accuracy.mean(axis=1))[0], abs=1e-12)
    assert low <= rho <= high and high < -0.8  # a clear negative association stays negative in every resample


def test_a_predictor_equal_to_the_accuracy_picks_the_optimum_in_every_resample(script):
    """With the optimum far ahead of the others (0.1 against replica noise 0.005), every resample has the
    same optimum, and a predictor that is the accuracy itself picks it every time."""
    rng = np.random.default_rng(2)
    accuracy = np.array([0.6, 0.7, 0.8, 0.7])[:, None] + 0.005 * rng.standard_normal((4, 6))
    pick, agree = script.predictor_pick(accuracy, accuracy, n_boot=300)
    assert pick == 2 and agree == 1.0
    best, overlapping = script.optimum(accuracy)
    assert best == 2 and overlapping == []
    _, never = script.predictor_pick(-accuracy, accuracy, n_boot=300)
    assert never == 0.0


def test_block_from_a_small_merged_sweep_matches_its_files(script, tmp_path):
    import h5py

    merged = merged_sweep(tmp_path, SWEEP_TOML)
    g = script.grid(merged)
    assert g["configs"] == [(1, 4), (1, 12), (2, 4), (2, 12)]
    with h5py.File(merged, "r") as f:  # the reader's last-record values against the raw datasets
        for group, values in sweep_points(merged):
            k = g["configs"].index((values["model.depth"], values["model.width"]))
            np.testing.assert_array_equal(g["accuracy_test"][k], f[f"{group}/observables/accuracy_test"][-1])
            np.testing.assert_allclose(g["basin_sample"][k], f[f"{group}/observables/basin_sample"][-1].mean(axis=1))
            np.testing.assert_allclose(g["mode_order_breaking"][k],
                                       f[f"{group}/observables/mode_order_breaking"][-1].mean(axis=1))
    text = script.markdown({"gaussian": g})
    assert_tables_complete(text)
    assert text.count("| sample-space basin | + |") == 1 and "Test-accuracy optimum" in text


EXTENSION_TOML = SWEEP_TOML.replace('mode = "grid"\n[axes]\n"model.depth" = [1, 2]\n"model.width" = [4, 12]\n', """
[[points]]
"model.depth" = 3
"model.width" = 2
[[points]]
"model.depth" = 1
"model.width" = 2
"training.eta" = 500.0
[[points]]
"model.depth" = 4
"model.width" = 4
""").replace('output = "grid"', 'output = "wide"').replace("steps = 150", "steps = 150\non_divergence = \"freeze\"")


def test_the_extension_is_merged_into_one_grid_with_its_unrun_points_listed(script, tmp_path):
    """The reduced grid's merged file and an extension's finished points, read as one grid: the configurations
    of both, sorted; a point that diverged under freeze kept with its finite replicas; the declared point
    never run listed as missing; and a configuration in both files refused."""
    from dynsim.kinds import make_runner
    from dynsim.sweep import load_sweep

    (tmp_path / "a").mkdir()
    original = merged_sweep(tmp_path / "a", SWEEP_TOML)
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "wide.toml").write_text(EXTENSION_TOML)
    sweep = load_sweep(folder / "wide.toml")
    assert [p.values["model.depth"] for p in sweep.points] == [3, 1, 4]
    for point in sweep.points[:2]:  # the third is declared and not run: a sweep stopped early
        make_runner(point.config).run(sweep.point_path(point), progress=False)
    extension = script.merge_points(folder / "wide.toml")
    g = script.grid([original, extension])
    assert g["configs"] == [(1, 2), (1, 4), (1, 12), (2, 4), (2, 12), (3, 2)]
    assert g["missing"] == [(4, 4)]
    diverged = np.isnan(g["accuracy_test"][0])
    assert 0 < diverged.sum() and np.isfinite(g["accuracy_test"][1:]).all()
    assert g["accuracy_test"].shape == (6, 3) and g["basin_weight"].shape == (6, 3)
    assert script.grid(original)["configs"] == [(1, 4), (1, 12), (2, 4), (2, 12)]  # one file reads as before
    text = script.markdown({"gaussian": g})
    assert_tables_complete(text)
    assert "Declared in the sweeps but not run (yet): depth 4, width 4." in text
    assert f"depth 1, width 2: {diverged.sum()} of 3" in text
    # the heat maps draw the grid with its unrun point left blank
    (figure,) = script.figure({"gaussian": g}, tmp_path / "figures")
    assert figure.endswith("depth_width_gaussian.png") and Path(figure).stat().st_size > 0
    with pytest.raises(ValueError, match="depth 1, width 4"):
        script.grid([original, original])


def test_the_cost_law_recovers_a_known_law_and_the_cost_table_is_complete(script):
    """Timings made from a known law (per replica-step and per run, each linear in depth and parameters)
    give that law back, and the table of the full grid marks the measured and the run points."""
    def params(depth, width):
        return 40 * width + (depth - 1) * width * width + 10 * width

    step, fixed = np.array([2e-5, 1e-6, 5e-8]), np.array([0.05, 2e-4, 3e-5])
    rows = []
    for depth, width in ((1, 2), (1, 512), (4, 32), (16, 128), (64, 8), (100, 2)):
        x = np.array([1.0, depth, params(depth, width)])
        rows.append(dict(task="t", depth=depth, width=width, n_params=int(x[2]), steps=[20, 1020],
                         seconds=[float(fixed @ x + 20 * step @ x), float(fixed @ x + 1020 * step @ x)]))
    law = script.cost_law(rows)["t"]
    np.testing.assert_allclose(law["step"], step, rtol=1e-6)
    np.testing.assert_allclose(law["fixed"], fixed, rtol=1e-6)
    seconds, measured = script.point_seconds(law, 100, 512, params(100, 512), 4000, 5)
    x = np.array([1.0, 100, params(100, 512)])
    assert not measured and seconds == pytest.approx(5 * (4000 * step @ x + fixed @ x))
    cost = dict(rows=rows, date="today", machine="a test", load_average=[0.0, 0.0], steps=4000, replicas=5,
                n_params={"t": {(d, w): params(d, w) for d in script.FULL_DEPTHS for w in script.FULL_WIDTHS}},
                done={"t": {(1, 2), (4, 32)}})
    text = "\n".join(script.cost_markdown(cost))
    assert_tables_complete(text)
    cells = [c.strip() for line in text.splitlines() if line.startswith("| ") for c in line.split("|")[2:-1]]
    assert sum(c.endswith(" m *") for c in cells) == 2
    assert sum(c.endswith((" m", " m *")) for c in cells) == len(rows)
