"""The results scripts of sections 5, 7 and the SDE trainer (data/scripts/chain_results.py,
saturation_results.py, sde_orders.py): each writes complete tables from small run files made here (the
SDE orders: from few paths), every row as long as its table's header, no empty, NaN or infinite cell;
its blocks land between their markers, and one number of each is checked against a reference that does
not go through the script."""
from pathlib import Path

import numpy as np
import pytest

from analysis.blocks import markers
from dynsim import kinds

from conftest import assert_tables_complete, results_script

ROOT = Path(__file__).resolve().parents[1]


def _write_and_check(text, begin, end, tmp_path, name):
    from analysis.blocks import replace_block

    page = tmp_path / "results.md"
    page.write_text(f"before\n{begin}\nold\n{end}\nafter\n")
    replace_block(page, name, text)
    new = page.read_text()
    assert new.startswith("before\n") and new.endswith("\nafter\n") and "old" not in new
    assert new.count(begin) == 1 and new.count(end) == 1


def _run(tables, path):
    assert kinds.run(kinds.config_from_mapping(tables), path, progress=False).ok
    return path


def _chain(path, inputs, **model):
    base = dict(kind="maxnorm_chain", width=20, candidates=200, depth=8, selection="magnitude", layer_output="linear")
    base.update(model)
    return _run(dict(run=dict(seed=4, replicas=24), model=base, inputs=inputs, wormhole=dict(alpha=1e4)), path)


def test_chain_block_is_complete_and_its_gain_matches_the_exact_expectation(tmp_path, monkeypatch):
    script = results_script("chain_results")
    monkeypatch.setattr(script, "N_BOOT", 200)
    monkeypatch.setattr(script, "N_BOOT_RECOMPUTE", 40)
    gaussian = dict(source="gaussian", n_test=100, n_noise=40)
    paths = {"collapse": _chain(tmp_path / "collapse.h5", gaussian),
             "signed": _chain(tmp_path / "signed.h5", gaussian, selection="negative"),
             "relu": _chain(tmp_path / "relu.h5", gaussian, layer_output="relu"),
             "digits": _chain(tmp_path / "digits.h5", dict(source="digits", n_test=40, negatives=True, n_noise=20),
                              width=64, candidates=400),
             "relu_readout": _chain(tmp_path / "relu_readout.h5", gaussian, layer_output="relu_readout")}
    results = {name: script.measure_chain(path) for name, path in paths.items()}
    text = script.markdown(results)
    assert_tables_complete(text)
    assert text.count("| collapse") == 4 and "Flip-label" in text and "near 1/4" in text and "theta* = k/n" in text
    _write_and_check(text, script.BEGIN, script.END, tmp_path, "chain")

    # the squared gain of the collapse chain against dynsim.theory.chain's exact order-statistic mean,
    # from the file's gains directly: 24 chains x 8 layers of independent draws, within 4 s.e.
    from dynsim.store import ChainReader
    from dynsim.theory.chain import expected_squared_gain

    with ChainReader(paths["collapse"]) as rd:
        s = np.exp(2.0 * rd.train_log_gain()[1:]).ravel()
    gain = results["collapse"]["squared_gain"]
    assert gain["mean"] == pytest.approx(s.mean(), rel=1e-12)
    assert abs(s.mean() - expected_squared_gain(20, 200, "magnitude")) < 4 * s.std(ddof=1) / np.sqrt(s.size)
    assert gain["interval"][0] < gain["mean"] < gain["interval"][1]
    # at the input, |cos| of two independent Gaussian directions in R^k has mean
    # Gamma(k/2) / (sqrt(pi) Gamma((k+1)/2)) (0.178 at k = 20); 100 probes: s.e. ~0.013, 4 s.e. allowed
    from scipy.special import gammaln

    expected = np.exp(gammaln(10) - gammaln(10.5)) / np.sqrt(np.pi)
    assert abs(results["collapse"]["groups"]["data"]["mean_abs_cos"][0] - expected) < 0.055


def _encoding_tables(seed, steps, replicas, loss, model, task, record):
    return dict(run=dict(seed=seed, replicas=replicas, steps=steps),
                model=dict(input_dim=1, width=16, activation="tanh", scaling="standard", bias_std=1.0, **model),
                task=dict(kind="encoding", **task), training=dict(method="gd", eta=0.5, loss=loss), record=record)


def test_saturation_blocks_are_complete_and_the_boundary_sits_at_the_edge(tmp_path, monkeypatch):
    script = results_script("saturation_results")
    monkeypatch.setattr(script, "N_BOOT", 200)
    record = dict(n_records=40, observables=["loss_train", "accuracy_train", "ntk", "output"])
    saturation = {}
    for loss in ("sigmoid_squared", "cross_entropy"):
        for p in (1, 4):
            path = _run(_encoding_tables(1, 20_000, 6, loss, {}, dict(n_train=p, n_probes=p, n_sources=1, n_test=0,
                                                                         boundary=0.3), record),
                        tmp_path / f"sat_{loss}_{p}.h5")
            saturation[f"{loss}_p{p}"] = script.measure_saturation(path)
    text = script.saturation_markdown(saturation)
    assert_tables_complete(text)
    _write_and_check(text, *markers("saturation"), tmp_path, "saturation")
    # one sample, squared error: in kernel time the error decays as the exact constant-kernel flow
    # (exact for one sample under gradient flow); at 2e4 steps and 6 replicas within 0.02 of its slope
    f = saturation["sigmoid_squared_p1"]["fits"]["error"]
    assert abs(f["kernel"].exponent - f["flow"]) < 0.02

    plasticity = _run(_encoding_tables(2, 30_000, 8, "sigmoid_squared", {},
                                       dict(n_train=16, n_test=16, n_probes=64, n_sources=2, boundary=0.5),
                                       dict(n_records=40, two_time_waits=5, two_time_lags=2,
                                            observables=["loss_train", "accuracy_train", "ntk", "output"])),
                      tmp_path / "plasticity.h5")
    measured = script.measure_plasticity(plasticity)
    text = script.plasticity_markdown(measured)
    assert_tables_complete(text)
    _write_and_check(text, *markers("plasticity"), tmp_path, "plasticity")
    # the boundary converges to the task's edge (0.5; the training grid's spacing is 1/16)
    assert abs(np.nanmean(measured["final"]) - 0.5) < 1 / 32

    observables = ["loss_train", "accuracy_train", "output"]
    m4 = {loss: script.measure_encoding(_run(_encoding_tables(3, 20_000, 4, loss, dict(outputs=4, weight_std=4.0),
                                                              dict(n_train=32, n_test=0, n_probes=64, n_sources=4),
                                                              dict(n_records=30, observables=observables)),
                                             tmp_path / f"m4_{loss}.h5"))
          for loss in script.ENCODING_RUNS}
    two_d = script.measure_encoding(_run(
        dict(run=dict(seed=3, replicas=3, steps=3000),
             model=dict(input_dim=2, width=16, activation="tanh", bias_std=1.0, weight_std=4.0, outputs=4),
             task=dict(kind="encoding", n_train=32, n_test=32, n_probes=64, n_sources=4, probe_grid=True),
             training=dict(method="gd", eta=0.5, loss="cross_entropy"),
             record=dict(n_records=10, observables=observables + ["accuracy_test"])), tmp_path / "m4_2d.h5"))
    text = script.encoding_markdown(m4, two_d)
    assert_tables_complete(text)
    _write_and_check(text, *markers("encoding_m4"), tmp_path, "encoding_m4")


def test_sde_block_is_complete_and_the_noiseless_orders_are_the_schemes(tmp_path, monkeypatch):
    script = results_script("sde_orders")
    for name, value in (("PATHS", 400), ("CHUNK", 150), ("WEAK_PATHS", 20_000), ("N_BOOT", 100)):
        monkeypatch.setattr(script, name, value)
    measured = script.measure()
    text = script.markdown(measured)
    assert_tables_complete(text)
    assert measured["paths"] == 400 and text.count("| Euler-Maruyama") == 2
    _write_and_check(text, script.BEGIN, script.END, tmp_path, "sde")
    # without noise the error against the exact e^{-1} falls as dt^order: 1, 2, 4 within 0.1
    # (measured 1.02, 2.04, 4.04 over dt = 1/8 ... 1/64)
    for name, order in (("euler_maruyama", 1.0), ("heun", 2.0), ("rk4", 4.0)):
        assert abs(measured["deterministic"][name] - order) < 0.1
    # 400 paths in chunks of 150 are the first 400 of the full run's stream: OU strong orders near 1
    for key in ("ou_em_strong", "ou_heun_strong"):
        slope, low, high = measured[key]
        assert low <= slope <= high and abs(slope - 1.0) < 0.15


def test_sde_network_block_is_complete_and_langevin_bias_is_order_dt():
    """The block of the Langevin stationary law and the network runs, on fewer paths and replicas. The
    stationary laws are exact Lyapunov solutions: Euler-Maruyama's is O(dt) off T H^-1 (its first-order
    correction at dt = 0.05 is about 1 %), Heun's O(dt^2), so more than ten times closer."""
    script = results_script("sde_orders")
    stationary = script.langevin_stationary(paths=2000)
    assert 0.005 < stationary["euler_maruyama"]["bias"] < 0.02
    assert stationary["heun"]["bias"] < stationary["euler_maruyama"]["bias"] / 10
    for name in ("euler_maruyama", "heun"):  # the sample covariance within sampling error of the exact law
        assert stationary[name]["max_se"] < 4.5
    versus = script.sgd_against_sde(etas=(0.05,), replicas=24, t_end=2.0)
    feedback = script.loss_feedback(replicas=6)
    text = script.network_markdown(stationary, versus, feedback)
    assert_tables_complete(text)
    begin, end = "<!-- sde_network:begin -->", "<!-- sde_network:end -->"
    assert text.startswith(begin) and text.rstrip().endswith(end)
    # additive Langevin holds the loss far above the loss-scaled noise's at the end
    losses = feedback["losses"]
    assert losses["langevin"][-1].mean() > 10 * losses["loss_scaled"][-1].mean()
