"""The max-norm chain (wormhole paper, #10 part A): construction, measures, experiment, file, report.

References are independent of the compiled kernel: NumPy re-computation from the same candidate
draws (regenerated through ``MaxNormChain.candidate_matrix``), the exact order-statistic
expectation of ``dynsim.theory.chain``, and exact symmetries of the linear chain.
"""
import dataclasses
import math

import h5py
import numpy as np
import pytest

from analysis.chain import (angle_decay, collapsed_fraction, decidability, flip_label_decidability, mean_abs_cosine,
                            typical_angle_factor)
from dynsim.chain_experiment import (ChainConfig, ChainInputs, ChainRunSpec, WormholeSpec, chain_config_from_mapping,
                                     make_inputs, run_chain)
from dynsim.cli import main as dynsim_main
from dynsim.datasets import load_digits
from dynsim.models.chain import MEASURES, MaxNormChain
from dynsim.spec import ConfigError
from dynsim.store import ChainReader, RunReader, StoreError
from dynsim.theory.chain import expected_squared_gain

EPS = np.finfo(np.float64).eps
M = {name: i for i, name in enumerate(MEASURES)}


def _numpy_chain(model, seed, replica, u, probes):
    """Reference: build the chain with NumPy from the same candidate rows; returns W [L, k, k] and,
    per layer 0..L, the unnormalised outputs of u and of every probe (linear algebra, no renormalising)."""
    post = {"linear": lambda v: v, "normalised": lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True),
            "relu": lambda v: np.maximum(v / np.linalg.norm(v, axis=-1, keepdims=True), 0.0)}[model.layer_output]
    x, vs = u.copy(), probes.copy()
    weights, xs, vss = [], [x], [vs]
    for layer in range(1, model.depth + 1):
        R = model.candidate_matrix(seed, replica, layer)
        y = R @ (x / np.linalg.norm(x))
        score = y if model.selection == "negative" else -np.abs(y)
        W = R[np.argsort(score, kind="stable")[: model.width]]
        weights.append(W)
        x, vs = post(W @ x), post(vs @ W.T)
        xs.append(x)
        vss.append(vs)
    return np.array(weights), xs, vss


@pytest.mark.parametrize("selection,layer_output", [("magnitude", "linear"), ("negative", "linear"),
                                                    ("magnitude", "relu")])
def test_selection_and_measures_match_numpy(selection, layer_output):
    model = MaxNormChain(width=12, candidates=150, depth=5, selection=selection, layer_output=layer_output)
    rng = np.random.default_rng(7)
    u, probes, message = rng.normal(size=12), rng.normal(size=(9, 12)), rng.normal(size=12)
    seed, alpha = 11, 1e4
    gains, out = model.measure(seed, 3, 2, u, probes, message, alpha)  # replicas 3 and 4
    for r, replica in enumerate((3, 4)):
        W_ref, xs, vss = _numpy_chain(model, seed, replica, u, probes)
        # the selected rows are copies of candidate rows: identical bits
        np.testing.assert_array_equal(model.weights(seed, replica, u), W_ref)
        for layer in range(model.depth + 1):
            x, vs = xs[layer], vss[layer]
            xn = x / np.linalg.norm(x)
            vn = vs / np.linalg.norm(vs, axis=1, keepdims=True)
            cos = vn @ xn
            # directions agree to rounding: 1e-12 is ~5000 ulp, room for L renormalisations of k-sums
            np.testing.assert_allclose(out[M["cosine"], layer, r], cos, atol=1e-12)
            # d from arccos is accurate only away from |cos| = 1 (d well inside (0, 1) here)
            np.testing.assert_allclose(out[M["angular_distance"], layer, r], np.arccos(np.clip(cos, -1, 1)) / np.pi,
                                       atol=1e-7)
            np.testing.assert_array_equal(out[M["sign_distance"], layer, r],
                                          np.mean((vn > 0) != (xn > 0), axis=1))
            # the wormhole identity m_hat = m + alpha (a - b): error alpha |a - b| / |m|, to the
            # rounding of m - alpha b + alpha a (a few ulp of alpha per component)
            expected = alpha * np.linalg.norm(xn - vn, axis=1) / np.linalg.norm(message)
            tol = 8 * EPS * (alpha + np.abs(message).max()) * math.sqrt(12) / np.linalg.norm(message)
            np.testing.assert_allclose(out[M["wormhole_error"], layer, r], expected, rtol=0, atol=tol)
            # (1 - cos) / 2, as |a - b|^2 / 4 of the unit vectors
            np.testing.assert_allclose(out[M["squared_distance"], layer, r], (1 - cos) / 2, atol=1e-12)
            if layer_output == "linear":
                # linear chain: the gains add up to log |H_l v| (NumPy products, not renormalised)
                np.testing.assert_allclose(gains[: layer + 1, r].sum(), np.log(np.linalg.norm(x)), rtol=1e-12)
                np.testing.assert_allclose(out[M["log_gain"], : layer + 1, r].sum(axis=0),
                                           np.log(np.linalg.norm(vs, axis=1)), rtol=1e-12)


def test_norm_growth_matches_the_exact_order_statistic_expectation():
    model = MaxNormChain(width=20, candidates=500, depth=10)
    u = np.random.default_rng(0).normal(size=20)
    gains, _ = model.measure(5, 0, 200, u, u[None, :], u, 1.0)
    s = np.exp(2 * gains[1:]).ravel()  # 2,000 independent squared gains (fresh rows every layer)
    expected = expected_squared_gain(20, 500, "magnitude")
    # sampling error of a mean of 2,000 iid draws: 4 standard errors (fails by chance ~6e-5)
    assert abs(s.mean() - expected) < 4 * s.std(ddof=1) / math.sqrt(s.size)
    # and the selection matters: k unselected rows would give E[S] = k = 20, six times less
    assert s.mean() > 5 * 20


def test_signed_selection_keeps_the_most_negative_scores():
    model = MaxNormChain(width=8, candidates=100, depth=3, selection="negative")
    u = np.random.default_rng(1).normal(size=8)
    W = model.weights(2, 0, u)
    y = W[0] @ (u / np.linalg.norm(u))
    y_all = model.candidate_matrix(2, 0, 1) @ (u / np.linalg.norm(u))
    np.testing.assert_allclose(y, np.sort(y_all)[:8], rtol=1e-13)
    assert np.all(y < 0)


def _config(**inputs):
    base = dict(source="gaussian", n_test=100)
    base.update(inputs)
    return ChainConfig(run=ChainRunSpec(seed=3, replicas=24, block_replicas=10),
                       model=MaxNormChain(width=20, candidates=500, depth=8), inputs=ChainInputs(**base),
                       wormhole=WormholeSpec(alpha=1e4))


def test_reduced_collapse_experiment(tmp_path):
    """Random probes: d centred at 0.5 at the input, split onto {0, 1} with depth (the paper's collapse)."""
    path = tmp_path / "collapse.h5"
    result = run_chain(_config(), path)
    assert result.ok and result.replicas_done == 24
    with ChainReader(path) as rd:
        d, cos = rd.measure("angular_distance"), rd.measure("cosine")
    # input layer: 100 Gaussian probes in k = 20 dims: |d - 0.5| has s.d. ~ 0.07 per probe, the mean
    # over 100 probes ~0.007: 0.03 is four of those
    assert abs(np.mean(d[0]) - 0.5) < 0.03
    assert collapsed_fraction(d)[0] < 0.05
    # after 8 layers (tan^2 shrinking ~6x per layer) almost every pair sits within 0.05 of 0 or 1
    assert collapsed_fraction(d)[8] > 0.95
    curve = mean_abs_cosine(cos)
    assert curve[8] > 0.99 and np.all(np.diff(curve) > 0)
    # collapse rate: the median angle to +-H u shrinks per layer as chi^2_19 / S predicts (small-angle
    # theory, E log S from the training input's gains). Measured over seeds 0..4 at this size: within
    # 2.8 % (bootstrap half-width ~2.3 %); 5 % allows that spread plus the small-angle approximation.
    with ChainReader(path) as rd:
        gains = rd.train_log_gain()
    fitted, _ = angle_decay(d, 4)
    assert abs(fitted / typical_angle_factor(20, gains) - 1) < 0.05


def test_flip_label_and_wormhole_on_the_shipped_digits(tmp_path):
    config = ChainConfig(run=ChainRunSpec(seed=1, replicas=8),
                         model=MaxNormChain(width=64, candidates=800, depth=8),
                         inputs=ChainInputs(source="digits", n_test=60, negatives=True, n_noise=40))
    path = tmp_path / "digits.h5"
    assert run_chain(config, path).ok
    with ChainReader(path) as rd:
        d, err, groups = rd.measure("angular_distance"), rd.measure("wormhole_error"), rd.inputs()["probe_group"]
        inputs = rd.inputs()
    images, _ = load_digits()
    np.testing.assert_array_equal(inputs["train"], images[0])
    np.testing.assert_array_equal(inputs["probes"][groups == 1], -inputs["probes"][groups == 0])
    # linear chain: H(-v) = -H(v), so d(-v) = 1 - d(v): the two distributions mirror about 0.5
    np.testing.assert_allclose(d[..., groups == 1], 1.0 - d[..., groups == 0], atol=1e-12)
    dec = flip_label_decidability(d, groups)
    assert dec[8] > 10 * dec[0]  # the separation grows with depth (measured: x ~ 10^3)
    # wormhole with uniform-noise keys: the error falls by more than 100x over 8 layers (measured
    # 2,280 -> 5.9, ~390x, at n = 800; it keeps falling geometrically with depth)
    noise = err[..., groups == 2]
    assert np.median(noise[8]) < 1e-2 * np.median(noise[0])
    assert np.all(np.diff(np.median(noise.reshape(9, -1), axis=1)) < 0)


def test_blocks_and_replica_offsets_give_identical_chains(tmp_path):
    """A replica's chain depends on (seed, replica) only: block size and thread count do not matter."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    cfg = _config(n_test=20)
    run_chain(cfg, a)
    run_chain(ChainConfig(run=ChainRunSpec(seed=3, replicas=24, block_replicas=7), model=cfg.model,
                          inputs=cfg.inputs, wormhole=cfg.wormhole), b)
    with ChainReader(a) as ra, ChainReader(b) as rb:
        for name in MEASURES:
            np.testing.assert_array_equal(ra.measure(name), rb.measure(name))
        np.testing.assert_array_equal(ra.train_log_gain(), rb.train_log_gain())


def test_interrupted_run_keeps_committed_replicas(tmp_path, monkeypatch):
    import dynsim.chain_experiment as ce

    calls = {"n": 0}

    def stop_on_third_block():
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ce, "raise_if_stop_requested", stop_on_third_block)
    path = tmp_path / "cut.h5"
    result = run_chain(_config(n_test=20), path)
    assert result.code == "interrupted" and result.replicas_done == 20
    full = tmp_path / "full.h5"
    monkeypatch.setattr(ce, "raise_if_stop_requested", lambda: None)
    run_chain(_config(n_test=20), full)
    with ChainReader(path) as cut, ChainReader(full) as ref:
        assert cut.status["code"] == "interrupted" and cut.replicas_done == 20
        np.testing.assert_array_equal(cut.measure("cosine"), ref.measure("cosine")[:, :20])
    with h5py.File(path) as f:  # the uncommitted replicas are NaN, never half-written numbers
        assert np.isnan(f["chain/cosine"][:, 20:]).all()
    # 'dynsim resume' builds the missing replicas: the file then equals the uninterrupted run's
    assert dynsim_main(["resume", str(path), "-q"]) == 0
    with ChainReader(path) as resumed, ChainReader(full) as ref:
        assert resumed.status["code"] == "completed" and resumed.replicas_done == 24
        for name in MEASURES:
            np.testing.assert_array_equal(resumed.measure(name), ref.measure(name))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError) as e:
        ChainConfig(model=MaxNormChain(width=20), inputs=ChainInputs(source="digits"))
    assert e.value.field == "model.width" and "64" in str(e.value)
    with pytest.raises(ConfigError) as e:
        MaxNormChain(width=30, candidates=20)
    assert e.value.field == "model.candidates"
    with pytest.raises(ConfigError) as e:
        ChainInputs(source="digits", train_index=4, message_index=4)
    assert e.value.field == "inputs.message_index"
    with pytest.raises(ConfigError) as e:
        chain_config_from_mapping({"model": {"kind": "maxnorm_chain"}, "training": {}})
    assert e.value.field == "training"
    with pytest.raises(ConfigError) as e:
        chain_config_from_mapping({"model": {"kind": "maxnorm_chain", "depth": 0}})
    assert e.value.field == "model.depth"


def test_decidability_closed_form():
    a, b = np.array([0.0, 2.0]), np.array([4.0, 8.0])
    # means 1 and 6, sample variances 2 and 8: |1 - 6| / sqrt(5) exactly
    assert decidability(a, b) == pytest.approx(5 / math.sqrt(5), rel=1e-15)
    with pytest.raises(ValueError, match="at least two"):
        decidability([1.0], [1.0, 2.0])


def test_digits_data_set():
    images, labels = load_digits()
    assert images.shape == (1797, 64) and images.min() == 0.0 and images.max() == 1.0
    # class counts of the UCI test set (as scikit-learn's load_digits reports them)
    np.testing.assert_array_equal(np.bincount(labels), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_cli_run_info_and_report(tmp_path, capsys):
    from analysis.cli import main as analysis_main

    cfg = tmp_path / "chain.toml"
    cfg.write_text('[run]\nseed = 2\nreplicas = 6\n\n[model]\nkind = "maxnorm_chain"\nwidth = 16\n'
                   'candidates = 200\ndepth = 6\n\n[inputs]\nn_test = 30\nnegatives = true\nn_noise = 10\n')
    out = tmp_path / "chain.h5"
    assert dynsim_main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    assert dynsim_main(["info", str(out)]) == 0
    assert "maxnorm_chain: k=16 n=200 depth=6" in capsys.readouterr().out
    with pytest.raises(StoreError, match="not a training run"):
        RunReader(out)
    assert dynsim_main(["resume", str(out), "-q"]) == 0  # complete already: nothing to build
    assert analysis_main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "exact expectation" in text and (tmp_path / "rep" / "chain_wormhole.png").stat().st_size > 1000
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nkind = "maxnorm_chain"\nwidth = 16\ncandidates = 8\n')
    assert dynsim_main(["run", str(bad), "-o", str(tmp_path / "bad.h5")]) == 2
    assert "model.candidates" in capsys.readouterr().err


def test_inputs_are_deterministic_and_grouped():
    cfg = _config(n_test=5, negatives=True, n_noise=3)
    a, b = make_inputs(cfg), make_inputs(cfg)
    np.testing.assert_array_equal(a.probes, b.probes)
    np.testing.assert_array_equal(a.probe_group, [0] * 5 + [1] * 5 + [2] * 3)
    assert (a.probes[a.probe_group == 2] >= 0).all() and (a.probes[a.probe_group == 2] < 1).all()


def test_authors_relu_readout_matches_numpy_and_ends_at_0_or_a_quarter():
    """The authors' relu chain: the chain is the linear one (same weights, bit for bit), relu acts on
    the read-out only. A NumPy rebuild of every layer's read-outs gives the measures; at L = 15 with
    the paper's (k, n) = (20, 500) the squared distance ends at 0 or 1/4 (relu(h) and relu(-h) have
    disjoint supports: |relu(h) - relu(-h)|^2 = |h|^2 = 1), about half each, as the seed reports."""
    linear = MaxNormChain(width=12, candidates=150, depth=5, layer_output="linear")
    readout = dataclasses.replace(linear, layer_output="relu_readout")
    rng = np.random.default_rng(8)
    u, probes, message = rng.normal(size=12), rng.normal(size=(9, 12)), rng.normal(size=12)
    seed = 5
    np.testing.assert_array_equal(readout.weights(seed, 0, u), linear.weights(seed, 0, u))
    _, out = readout.measure(seed, 0, 1, u, probes, message, 1e4)
    _, xs, vss = _numpy_chain(linear, seed, 0, u, probes)
    for layer in range(readout.depth + 1):
        xn = xs[layer] / np.linalg.norm(xs[layer])
        vn = vss[layer] / np.linalg.norm(vss[layer], axis=1, keepdims=True)
        a, b = np.maximum(xn, 0.0), np.maximum(vn, 0.0)
        alive = (np.linalg.norm(b, axis=1) > 0) & (np.linalg.norm(a) > 0)
        cos = (b @ a) / (np.linalg.norm(a) * np.linalg.norm(b, axis=1) + ~alive)
        np.testing.assert_allclose(out[M["squared_distance"], layer, 0][alive],
                                   np.sum((a - b) ** 2, axis=1)[alive] / 4, atol=1e-12)
        np.testing.assert_allclose(out[M["cosine"], layer, 0][alive], cos[alive], atol=1e-12)
        assert np.isnan(out[M["cosine"], layer, 0][~alive]).all()
    paper = MaxNormChain(width=20, candidates=500, depth=15, layer_output="relu_readout")
    probes = np.random.default_rng(9).normal(size=(200, 20))
    _, out = paper.measure(0, 0, 8, np.random.default_rng(10).normal(size=20), probes, message[:1].repeat(20), 1e4)
    final = out[M["squared_distance"], -1].ravel()
    at_zero, at_quarter = np.mean(final < 0.01), np.mean(np.abs(final - 0.25) < 0.01)
    assert at_zero + at_quarter > 0.99 and 0.3 < at_zero < 0.7  # the two ends, about half each


def test_readout_ends_counts_both_ends_with_a_bootstrap_over_chains():
    from analysis.chain import readout_ends

    rng = np.random.default_rng(3)
    # 40 chains x 50 probes: chain c has a fraction c / 40 of its probes at 1/4, the rest at 0
    squared = np.array([np.where(np.arange(50) < 50 * c / 40, 0.25, 0.0) for c in range(40)])
    squared += rng.uniform(-0.01, 0.01, squared.shape)
    (zero, quarter), (low, high) = readout_ends(squared)
    assert zero + quarter == 1.0 and quarter == pytest.approx(np.mean(squared > 0.125))
    # the interval comes from resampling whole chains: it contains the estimate and has the width of
    # the spread of the chains' own fractions (s.d. ~0.29 over 40 chains: s.e. ~0.046)
    assert low[1] < quarter < high[1] and 0.1 < high[1] - low[1] < 0.3
