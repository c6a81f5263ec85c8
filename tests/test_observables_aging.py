"""Issue 5, engine side: feature-space, fragility and two-time observables against NumPy, and
the two-time grid through interrupt and resume."""
import math

import numpy as np
import pytest

from dynsim.kinds import stored_config
from dynsim.kinds import resume
from dynsim.simple_experiment import Simulation
from dynsim.engine.schedule import schedule, two_time_grid
from dynsim.spec import ConfigError
from dynsim.store import RunReader

from conftest import FLOAT_RTOL, assert_same_run, small_config
from numpy_reference import forward_and_gradients, unpack

ALL_NEW = ["loss_train", "ntk", "response", "feature_spectrum", "effective_rank", "participation_ratio", "input_grad_norm",
           "flip_distance"]


def _config(kind="encoding", **record):
    task = dict(kind=kind, n_train=12, n_test=20, n_probes=9, n_sources=2)
    return small_config(task=task, model=dict(input_dim=2, width=7, activation="tanh", bias_std=1.0),
                        run=dict(steps=300, replicas=4), training=dict(method="sgd", batch_size=1, eta=0.1),
                        record=dict(n_records=6, observables=ALL_NEW, two_time_waits=4, two_time_lags=5,
                                    fragility_max_step=2.0, **record))


@pytest.fixture(scope="module", params=["encoding", "teacher"])
def run_file(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("aging") / f"{request.param}.h5"
    assert Simulation(_config(request.param)).run(path, progress=False).ok
    return path


def _hidden(theta, x, attrs):
    W, b, a, c = unpack(theta, attrs)
    act = {"tanh": np.tanh}[attrs["activation"]]
    return act(x @ W.T + (0.0 if b is None else b))


def _final_state(path, *observables):
    """(final parameters, model attributes, probes, last record of each observable) of a run file."""
    with RunReader(path) as rd:
        return (rd.dataset("params/final"), rd.model_attrs, rd.dataset("probes/x"),
                *(rd.observable(name)[-1] for name in observables))


def test_feature_spectrum_effective_rank_and_participation_ratio_match_numpy_svd(run_file):
    theta, attrs, x_probe, spectrum, erank, pratio = _final_state(
        run_file, "feature_spectrum", "effective_rank", "participation_ratio")
    for r in range(theta.shape[0]):
        H = _hidden(theta[r], x_probe, attrs)
        s = np.linalg.svd(H - H.mean(axis=0), compute_uv=False)
        # eigenvalues of the Gram matrix vs singular values: agree to ~1e-7 absolute on s ~ 1
        # (sqrt of eigenvalues near zero amplifies rounding: s = sqrt(lambda), d s = d lambda / 2 s)
        np.testing.assert_allclose(spectrum[r], s[:spectrum.shape[1]], atol=1e-7)
        p = s / s.sum()
        p = p[p > 0]
        assert erank[r] == pytest.approx(math.exp(-np.sum(p * np.log(p))), rel=1e-7)
        lam = s ** 2
        assert pratio[r] == pytest.approx(lam.sum() ** 2 / np.sum(lam ** 2), rel=1e-9)


def test_input_gradient_norm_matches_finite_differences(run_file):
    theta, attrs, x_probe, grad_norm = _final_state(run_file, "input_grad_norm")
    eps = 1e-6
    for r in range(theta.shape[0]):
        grads = []
        for d in range(x_probe.shape[1]):
            step = np.zeros(x_probe.shape[1])
            step[d] = eps
            up = forward_and_gradients(theta[r], x_probe + step, attrs)[0]
            down = forward_and_gradients(theta[r], x_probe - step, attrs)[0]
            grads.append((up - down) / (2 * eps))
        # central differences: error O(eps^2 f''') ~ 1e-12, rounding ~ 1e-16 / eps ~ 1e-10
        np.testing.assert_allclose(grad_norm[r], np.linalg.norm(np.array(grads), axis=0), rtol=1e-7, atol=1e-9)


def test_flip_distance_is_where_the_output_crosses(run_file):
    """At the reported distance the class flips (or f moves by the margin); 1e-6 before it, not."""
    theta, attrs, x_probe, flip = _final_state(run_file, "flip_distance")
    with RunReader(run_file) as rd:
        classify = rd.file["data"].attrs["task"] == "encoding"
        margin = stored_config(rd).record.fragility_margin
    eps = 1e-6
    checked = 0
    for r in range(theta.shape[0]):
        f0, _ = forward_and_gradients(theta[r], x_probe, attrs)
        for p in range(x_probe.shape[0]):
            e = 1e-7
            grad = np.array([(forward_and_gradients(theta[r], x_probe[p:p + 1] + e * np.eye(x_probe.shape[1])[d], attrs)[0]
                              - forward_and_gradients(theta[r], x_probe[p:p + 1] - e * np.eye(x_probe.shape[1])[d],
                                                      attrs)[0])[0] / (2 * e) for d in range(x_probe.shape[1])])
            u = grad / np.linalg.norm(grad)
            if classify and f0[p] >= 0.0:
                u = -u
            dist = flip[r, p]
            if not np.isfinite(dist):
                continue

            def crossed(step):
                f = forward_and_gradients(theta[r], x_probe[p:p + 1] + step * u, attrs)[0][0]
                return (f >= 0.0) != (f0[p] >= 0.0) if classify else abs(f - f0[p]) >= margin
            assert crossed(dist + eps) and not crossed(dist - eps), (r, p, dist)
            checked += 1
    assert checked >= theta.shape[0] * x_probe.shape[0] // 3


def test_two_time_observables_match_the_stored_snapshots(run_file):
    with RunReader(run_file) as rd:
        axes = rd.two_time_axes()
        snaps = rd.dataset("two_time/theta_w")
        final = rd.dataset("params/final")
        steps = rd.steps
        C = rd.observable("autocorrelation")
        M = rd.observable("msd")
        grid = rd.two_time("autocorrelation")
        stored = rd.dataset("two_time/autocorrelation")
        ntk_w = rd.dataset("two_time/ntk")
        ntk = rd.observable("ntk")
        response_w = rd.dataset("two_time/response")
        response = rd.observable("response")
    waits = axes["t_w"]
    np.testing.assert_array_equal(grid, stored)  # the reader's view of the records = the array written at the end
    for i, wait in enumerate(waits):
        k = int(np.flatnonzero(steps == wait)[0])
        np.testing.assert_array_equal(ntk_w[i], ntk[k])
        np.testing.assert_array_equal(response_w[i], response[k])
        np.testing.assert_allclose(C[k, :, i], 1.0, rtol=1e-14)
        assert np.all(M[k, :, i] == 0.0)
        assert np.all(np.isnan(C[:k, :, i]))
        expect_c = np.sum(snaps[i] * final, axis=1) / np.linalg.norm(snaps[i], axis=1) / np.linalg.norm(final, axis=1)
        np.testing.assert_allclose(C[-1, :, i], expect_c, rtol=FLOAT_RTOL)
        np.testing.assert_allclose(M[-1, :, i], np.mean((final - snaps[i]) ** 2, axis=1), rtol=FLOAT_RTOL)
    # every (t_w, tau) pair with t_w + tau <= steps is on the record schedule and filled
    for i, wait in enumerate(waits):
        for j, lag in enumerate(axes["tau"]):
            assert np.all(np.isfinite(grid[i, j])) == (wait + lag <= steps[-1])


def test_two_time_grid_is_log_spaced_and_fits_the_run():
    waits, lags = two_time_grid(100_000, 8, 16)
    assert waits[0] == 100 and waits[-1] == 50_000 and lags[0] == 1 and lags[-1] == 50_000
    ratios = waits[1:] / waits[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=0.01)  # geometric
    steps = schedule(100_000, 10, "log", waits, lags)
    assert set(waits) <= set(steps) and set((waits[:, None] + lags).ravel()) <= set(steps)


def test_two_time_run_resumes_bit_identically(tmp_path):
    from test_reliability import _InterruptAfter

    cfg = _config(block_records=2, checkpoint_seconds=0.0)
    reference = tmp_path / "ref.h5"
    Simulation(cfg).run(reference, progress=False)
    sim = Simulation(cfg)
    sim.chunk_steps = 5
    sim.advance = _InterruptAfter(sim, 30)
    out = tmp_path / "cut.h5"
    first = sim.run(out, progress=False)
    assert first.code == "interrupted"
    with RunReader(out) as rd:  # some but not all snapshots were taken before the interrupt
        taken = np.isfinite(rd.dataset("two_time/theta_w")[:, 0, 0])
        assert 0 < taken.sum() < taken.size
    assert resume(out, progress=False).ok
    assert_same_run(out, reference)


def test_bad_aging_settings_are_refused():
    with pytest.raises(ConfigError) as err:
        small_config(record=dict(observables=["msd"]))
    assert err.value.field == "record.observables" and "two_time_waits" in str(err.value)
