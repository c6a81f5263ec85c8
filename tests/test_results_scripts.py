"""The scripts that write docs/results.md from run files (results as code, issue 22 item 2, for the
sections they own): each runs here on small run files made by the test, and every table it writes
must be complete (every row as long as its header, no empty, NaN or infinite cell), its block must
land between its markers, and the page outside them must stay as it was."""
import re
from pathlib import Path

import numpy as np
import pytest

from dynsim import kinds

from conftest import assert_tables_complete, results_script

ROOT = Path(__file__).resolve().parents[1]


def _write_and_check(module, text, tmp_path):
    page = tmp_path / "results.md"
    page.write_text(f"before\n{module.BEGIN}\nold\n{module.END}\nafter\n")
    old = page.read_text()
    page.write_text(old[:old.index(module.BEGIN)] + text + old[old.index(module.END) + len(module.END):])
    new = page.read_text()
    assert new.startswith("before\n") and new.endswith("\nafter\n") and "old" not in new


def _run(tables, path):
    assert kinds.run(kinds.config_from_mapping(tables), path, progress=False).ok
    return path


def test_response_law_block_is_complete(tmp_path):
    script = results_script("response_law_prediction")
    network_tables = dict(run=dict(seed=2, replicas=4, steps=1500), model=dict(input_dim=1, width=8, bias_std=1.0),
                          task=dict(kind="encoding", n_train=8, n_test=8, n_probes=24, n_sources=2),
                          training=dict(method="gd", eta=0.1),
                          record=dict(n_records=20, params=True, observables=["loss_train", "output", "ntk",
                                                                              "response"]))
    network = _run(network_tables, tmp_path / "net.h5")
    from analysis.response_law import compare_files

    comparisons = {}
    for name, law in script.LAWS.items():
        path = _run(script._law_tables(network_tables, law, network), tmp_path / f"{name.replace(' ', '_')}.h5")
        comparisons[name] = compare_files(path, network)
    text = script.markdown({"m1": comparisons})
    assert_tables_complete(text)
    assert text.count("| lazy |") == 1 and "smallest change error" in text
    _write_and_check(script, text, tmp_path)


def test_flat_minima_block_is_complete(tmp_path, monkeypatch):
    script = results_script("flat_minima")
    monkeypatch.setattr(script, "LEVELS", (1.5, 0.8))
    results = {}
    for name, batch in zip(script.RUNS, (4, 32, 8, 16)):
        path = _run(dict(run=dict(seed=3, replicas=3, steps=400),
                         model=dict(kind="mlp", depth=1, width=8, activation="relu"),
                         task=dict(kind="digits", n_train=64, n_test=64),
                         training=dict(method="sgd", eta=0.05, batch_size=batch),
                         record=dict(n_records=12, params=True, weight_basin_directions=2, weight_basin_samples=64,
                                     observables=["loss_train", "accuracy_test", "basin_weight"])),
                    tmp_path / f"{name}.h5")
        results[name] = script.measure_at_levels(path, script.LEVELS)
        assert all(np.isfinite(results[name][level]["sharpness"]).all() for level in script.LEVELS), name
    text = script.markdown(results)
    assert_tables_complete(text)
    assert text.count("flatter (lower sharpness)") == 2 * len(script.LEVELS)
    _write_and_check(script, text, tmp_path)


def test_transfer_zoo_block_is_complete(tmp_path, monkeypatch):
    script = results_script("transfer_zoo")
    import analysis.zoo as zoo

    monkeypatch.setattr(zoo, "N_PERMUTATIONS", 200)
    monkeypatch.setattr(zoo, "N_BOOT", 100)
    paths = []
    for name, (depth, seed) in {"zoo_a": (1, 4), "zoo_b": (2, 5)}.items():
        paths.append(_run(dict(run=dict(seed=seed, replicas=3, steps=300),
                               model=dict(kind="mlp", depth=depth, width=8, activation="relu"),
                               task=dict(kind="digits", n_train=64, n_test=64, seed=7),
                               training=dict(method="sgd", eta=0.05, batch_size=16),
                               record=dict(n_records=4, params=True, observables=["loss_train"])),
                          tmp_path / f"{name}.h5"))
    text = script.markdown(script.analyse(paths, 40))
    assert_tables_complete(text)
    assert "| a |" in text and "| b |" in text and "Mantel" in text
    _write_and_check(script, text, tmp_path)
    # a zoo over different data is refused
    other = _run(dict(run=dict(seed=9, replicas=2, steps=50), model=dict(kind="mlp", depth=1, width=4),
                      task=dict(kind="digits", n_train=64, n_test=64, seed=8), training=dict(method="sgd"),
                      record=dict(n_records=2, params=True, observables=["loss_train"])), tmp_path / "other.h5")
    with pytest.raises(ValueError, match="other data"):
        zoo.load_zoo([paths[0], other])


def test_activation_block_is_complete(tmp_path):
    script = results_script("simple_network_results")
    from analysis.simple import fit_window
    from dynsim.store import RunReader

    rows = {}
    for activation, eta in (("tanh", 0.05), ("linear", 0.01)):
        tables = kinds.load_config(ROOT / "data" / "configs" / f"aging_{activation}.toml").to_mapping()
        tables["run"].update(replicas=6, steps=4000)
        tables["record"].update(n_records=30, two_time_waits=3, two_time_lags=6,
                                observables=["loss_train", "ntk", "response"])
        path = _run(tables, tmp_path / f"aging_{activation}.h5")
        with RunReader(path) as rd:
            window = fit_window(rd.times, None)
        rows[activation] = (script.numbers_of(path, tmp_path / "report"), window)
    text = script.markdown(rows)
    assert_tables_complete(text)
    assert text.count("| tanh |") == 1 and text.count("| linear |") == 1
    _write_and_check(script, text, tmp_path)
    tanh = tmp_path / "aging_tanh.h5"
    wide = script.numbers_of(tanh, tmp_path / "report", (2.0, 200.0), ("response", "kernel"))
    windows = script.aging_windows_block(rows["tanh"][0], wide)
    assert_tables_complete(windows)
    assert windows.count("| response amplitude A(t) |") == 2 and windows.count("| NTK amplitude |") == 2
    detail = script.aging_detail_block(rows["tanh"][0], wide)
    assert_tables_complete(detail)
    assert detail.count("rank-one share") == 2 and detail.count("master-curve") == 2
    lazy_tables = kinds.load_config(ROOT / "data" / "configs" / "lazy_ntk.toml").to_mapping()
    lazy_tables["run"].update(replicas=3, steps=200)
    lazy_tables["model"].update(width=64)
    lazy = script.lazy_block(_run(lazy_tables, tmp_path / "lazy.h5"), rows["tanh"][0], tmp_path / "report")
    assert "**" in lazy and "nan" not in lazy.lower() and lazy.startswith("<!-- lazy:begin -->")


def test_features_block_is_complete(tmp_path, monkeypatch):
    script = results_script("simple_network_results")
    monkeypatch.setattr(script, "FEATURE_LEVELS", (0.4, 0.3))
    paths = {}
    for run in script.FEATURE_RUNS:
        tables = kinds.load_config(ROOT / "data" / "configs" / f"features_{run}.toml").to_mapping()
        tables["run"].update(replicas=5, steps=3000)
        tables["record"].update(n_records=30)
        paths[run] = _run(tables, tmp_path / f"features_{run}.h5")
    text = script.features_block(paths)
    assert_tables_complete(text)
    assert text.count("| 0.40 |") == 5 and text.startswith("<!-- features:begin -->")


def test_ensure_run_keeps_resumes_runs_and_refuses_another_config(tmp_path, monkeypatch):
    from dynsim.simple_experiment import Simulation
    from dynsim.spec import ConfigError
    from dynsim.store import RunReader

    tables = dict(run=dict(seed=1, replicas=2, steps=400), model=dict(width=4), task=dict(n_train=6, n_test=4),
                  record=dict(n_records=6, checkpoint_steps=50))
    config = kinds.config_from_mapping(tables)
    path = tmp_path / "run.h5"
    assert kinds.ensure_run(config, path) == path  # missing: run
    stamp = path.stat().st_mtime_ns
    kinds.ensure_run(config, path)  # complete: kept as it is
    assert path.stat().st_mtime_ns == stamp
    with RunReader(path) as rd:
        whole = rd.observable("loss_train")
    cut = tmp_path / "cut.h5"
    original = Simulation.advance

    def interrupted(self, params, s0, s1, status, failed_step):
        if s0 >= 200:
            raise KeyboardInterrupt
        original(self, params, s0, s1, status, failed_step)
    monkeypatch.setattr(Simulation, "advance", interrupted)
    kinds.run(config, cut)
    monkeypatch.setattr(Simulation, "advance", original)
    kinds.ensure_run(config, cut)  # interrupted: resumed to the same records
    with RunReader(cut) as rd:
        assert rd.status["code"] == "completed"
        np.testing.assert_array_equal(rd.observable("loss_train"), whole)
    other = kinds.config_from_mapping(dict(tables, run=dict(seed=2, replicas=2, steps=400)))
    with pytest.raises(ConfigError, match="another config"):
        kinds.ensure_run(other, path)


def test_ensure_run_keeps_a_chain_file_and_refuses_another_config(tmp_path):
    """The block-wise kind through the same run-or-keep: a kept chain file is read through the kind's
    contract (its config text and tables), not a time-stepped kind's parse_config."""
    from dynsim.spec import ConfigError

    tables = dict(run=dict(seed=3, replicas=4), model=dict(kind="maxnorm_chain", width=4, candidates=6, depth=2),
                  inputs=dict(source="gaussian", n_test=2))
    config = kinds.config_from_mapping(tables)
    path = tmp_path / "chain.h5"
    assert kinds.ensure_run(config, path) == path
    stamp = path.stat().st_mtime_ns
    assert kinds.ensure_run(config, path) == path and path.stat().st_mtime_ns == stamp  # kept as it is
    with pytest.raises(ConfigError, match="another config"):
        kinds.ensure_run(kinds.config_from_mapping(dict(tables, run=dict(seed=4))), path)


def test_ensure_run_keeps_a_diverged_run_only_when_asked(tmp_path):
    """With on_divergence = "freeze" a run whose some replicas blow up ends 'diverged' with the others run
    to the end: refused by default, kept as it is (not resumed, not rerun) with keep_diverged."""
    from dynsim.spec import ConfigError
    from dynsim.store import RunReader

    tables = dict(run=dict(seed=3, replicas=8, steps=3000, on_divergence="freeze"), model=dict(input_dim=1, width=8),
                  task=dict(kind="teacher", n_train=8), training=dict(method="sgd", batch_size=1, eta=0.7),
                  record=dict(n_records=10, observables=["loss_train"]))  # tests/test_divergence.py's mixed ensemble
    config = kinds.config_from_mapping(tables)
    with pytest.raises(ConfigError, match="diverged"):
        kinds.ensure_run(config, tmp_path / "refused.h5")
    path = tmp_path / "kept.h5"
    assert kinds.ensure_run(config, path, keep_diverged=True) == path
    with RunReader(path) as rd:
        failed = rd.dataset("status/replica_failed_step")
        assert rd.status["code"] == "diverged" and 0 < (failed >= 0).sum() < 8
    stamp = path.stat().st_mtime_ns
    assert kinds.ensure_run(config, path, keep_diverged=True) == path and path.stat().st_mtime_ns == stamp


def test_transfer_rates_bootstrap_excludes_self_pairs():
    """A matrix with white-box rate 1 on the diagonal and transfer 0.5 off it, control 0.1: every resample
    of replicas must give exactly these rates (a resample that drew a replica twice and counted the pair
    of its two copies as transfer would give a transfer rate above 0.5), so each interval is the point."""
    script = results_script("transfer_replicas")
    matrix = np.full((7, 7), 0.5) + 0.5 * np.eye(7)
    rates = script.rates_with_intervals(matrix, np.full(7, 0.1), n_boot=300)
    for name, value in (("white", 1.0), ("transfer", 0.5), ("control", 0.1), ("transfer_over_white", 0.5),
                        ("transfer_over_control", 5.0)):
        np.testing.assert_allclose(rates[name], value, rtol=1e-12)
    # with structure, the interval brackets the full-sample value
    rng = np.random.default_rng(5)
    noisy = np.clip(matrix + 0.1 * rng.standard_normal((7, 7)), 0, 1)
    value, low, high = script.rates_with_intervals(noisy, np.full(7, 0.1), n_boot=300)["transfer"]
    assert value == pytest.approx(noisy[~np.eye(7, dtype=bool)].mean()) and low < value < high


def test_transfer_replicas_block_is_complete(tmp_path):
    script = results_script("transfer_replicas")
    path = _run(dict(run=dict(seed=4, replicas=6, steps=1500),
                     model=dict(input_dim=6, width=16, activation="tanh", bias_std=0.5),
                     task=dict(kind="teacher_sign", n_train=96, n_test=64, teacher_width=6, n_probes=4, n_sources=2),
                     training=dict(method="sgd", eta=0.1, batch_size=8, loss="cross_entropy"),
                     record=dict(n_records=6, two_time_waits=2, two_time_lags=2,
                                 observables=["loss_train", "accuracy_test"])), tmp_path / "ens.h5")
    text = script.markdown(script.transfer_numbers(path, tmp_path / "report"), script.run_end(path))
    assert_tables_complete(text)
    assert text.count("| PGD L2 |") == 1 and text.count("| input-gradient cosine |") == 1
    _write_and_check(script, text, tmp_path)


def test_every_block_of_the_page_has_the_script_that_writes_it():
    """data/scripts/results.py lists, per script, the blocks it writes: the page has exactly those blocks,
    each once, and each script's source names each of its blocks (a block no script writes would be
    text copied by hand)."""
    listing = results_script("results").SCRIPTS
    page = (ROOT / "docs" / "results.md").read_text()
    blocks = re.findall(r"<!-- ([a-z0-9_]+):begin -->", page)  # the page's own prose names "<!-- NAME:begin -->"
    listed = [block for names in listing.values() for block in names]
    assert sorted(blocks) == sorted(listed) and len(set(blocks)) == len(blocks)
    for name, names in listing.items():
        source = (ROOT / "data" / "scripts" / f"{name}.py").read_text()
        for block in names:
            assert f'"{block}"' in source or f"<!-- {block}:begin -->" in source, (name, block)
