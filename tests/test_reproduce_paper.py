"""Reduced versions of the reproduction runs of issue 5 (full-size numbers: docs/results.md).

Each test loads a shipped config from data/configs, cuts replicas and steps, runs it and asserts
the qualitative result with a stated margin; the fits come from ``analysis``.
"""
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from analysis import quantities as q
from analysis.collapse import best_collapse
from analysis.fits import compare_decay_models, fit_power_law
from dynsim.kinds import load_config, run, stored_config
from dynsim.store import RunReader

CONFIGS = Path(__file__).resolve().parents[1] / "data" / "configs"


def _run(tmp_path, name, *, replicas, steps, model=None, record=None, training=None, tag=""):
    cfg = load_config(CONFIGS / f"{name}.toml")
    cfg = dataclasses.replace(
        cfg, run=dataclasses.replace(cfg.run, replicas=replicas, steps=steps),
        model=dataclasses.replace(cfg.model, **(model or {})),
        training=dataclasses.replace(cfg.training, **(training or {})),
        record=dataclasses.replace(cfg.record, **(record or {})))
    path = tmp_path / f"{name}{tag}.h5"
    assert run(cfg, path, progress=False).ok
    return path


def test_lazy_regime_kernel_stays_at_its_initial_value_closer_the_wider(tmp_path):
    """Result 1. Expected from the seed (the NTK theory of the lazy regime) before the run: in NTK
    scaling the tangent kernel stays at its initial value, closer the wider the network. NTK scaling,
    GD, eta = 0.5 to t = 1000: the relative change of the tangent kernel
    |Theta_t - Theta_0|_F / |Theta_0|_F falls with the width at least like 1/sqrt(N) (which predicts
    a factor 4 for 16 x the width; measured 20% at N = 64 and 2.0% at N = 1024, a factor 10)."""
    change = {}
    for width in (64, 1024):
        path = _run(tmp_path, "lazy_ntk", replicas=8, steps=2000, model=dict(width=width),
                    record=dict(observables=("loss_train", "ntk")), tag=str(width))
        with RunReader(path) as rd:
            loss = rd.observable("loss_train")
            change[width] = float(np.mean(q.relative_kernel_change(rd)[1][-1]))
        assert np.mean(loss[-1]) < np.mean(loss[0]) / 3  # it did learn
    assert change[1024] < 0.03, change
    assert change[64] / change[1024] > 4.0, change


@pytest.fixture(scope="module")
def aging_runs(tmp_path_factory):
    """Reduced aging runs: 48 replicas, 2e5 steps (t = 1e4 at eta = 0.05), two-time grid 6 x 10."""
    tmp = tmp_path_factory.mktemp("aging")
    out = {}
    for name in ("aging_tanh", "aging_linear"):
        out[name] = _run(tmp, name, replicas=48, steps=200_000,
                         record=dict(n_records=40, two_time_waits=6, two_time_lags=10, params=4,
                                     observables=("loss_train", "ntk", "response")))
    return out


def test_response_amplitude_ages_like_a_power_law(aging_runs):
    """Result 2. Expected from the seed before the run: outside the lazy regime the training response
    ages, its amplitude decaying like a power law of t. tanh network, SGD: A(t) decays over t in
    [100, 1e4] with a clearly negative exponent, and a power law fits the decay better than an
    exponential (measured, full size: -0.55, section 3 of docs/results.md)."""
    with RunReader(aging_runs["aging_tanh"]) as rd:
        t, amp = q.response_amplitude(rd)
    window = (100.0, 1e4)
    fit = fit_power_law(t, amp.T, window=window, n_boot=300)
    assert fit.exponent_ci[1] < -0.3, fit.summary()
    comparison = compare_decay_models(t, amp.T, window=window)
    assert comparison.models["power_law"].aic < comparison.models["exponential"].aic - 10, comparison.summary()


def test_weights_age_the_autocorrelation_depends_on_the_waiting_time(aging_runs):
    """Two-time. Expected from the seed before the run: the weights age, so C(t_w, t_w + tau) is not a
    function of tau alone; rescaling tau by t_w^mu collapses it better than mu = 0 does, with mu's
    interval excluding 0 (measured, full size: mu = 1.48, flat range [1.35, 1.56])."""
    with RunReader(aging_runs["aging_tanh"]) as rd:
        axes = rd.two_time_axes()
        C = rd.two_time("autocorrelation")
    fit = best_collapse(axes["t_w_time"], axes["tau_time"], C, n_boot=100)
    assert fit.mu_ci[0] > 0.2, fit.summary()
    assert fit.quality < fit.quality_at_zero / 3, fit.summary()


def _linear_net_response(model, theta, x_probe, x_source, y_source, eta):
    """The exact one-step response of a network of linear units, in closed form: f(x) = s a.(W x + b) + c
    is bilinear in (a, W), so R(x; x_s) = f(x; theta - eta (f(x_s) - y_s) grad f(x_s)) - f(x; theta)
    with grad f(x_s) = (s a x_s [W], s a [b], s (W x_s + b) [a], 1 [c]) (squared loss l = (f - y)^2 / 2)."""
    blocks = model.unpack(theta)
    W, a = blocks["W"], blocks["a"]  # W [width, input_dim]
    b, c, s = blocks.get("b", np.zeros_like(a)), blocks.get("c", np.zeros(1)), model.output_scale
    has_b, has_c = "b" in blocks, "c" in blocks  # a bias the model lacks is not a parameter: it stays 0

    def f(x, W, b, a, c):
        return s * (x @ W.T + b) @ a + c[0]

    out = np.empty((len(x_source), len(x_probe)))
    for j, (xs, ys) in enumerate(zip(x_source, y_source)):
        step = eta * (f(xs[None], W, b, a, c)[0] - ys)
        W1 = W - step * s * np.outer(a, xs)
        b1 = b - step * s * a if has_b else b
        a1 = a - step * s * (W @ xs + b)
        c1 = c - step if has_c else c
        out[j] = f(x_probe, W1, b1, a1, c1) - f(x_probe, W, b, a, c)
    return out


def test_response_kernel_shape_depends_on_the_activation(aging_runs):
    """Result 3. Expected from the seed before asserting: the response kernel's shape over input space
    is set by the activation. With linear units the whole network is affine in x, so that alone
    proves nothing; instead the recorded exact response is checked against the closed-form response
    of a linear network, recomputed from the recorded parameters (``[record] params``), which fails
    for any wrong gradient, loss derivative, learning rate or source. With tanh the response is
    curved over the probes (second differences far from zero)."""
    with RunReader(aging_runs["aging_linear"]) as rd:
        response = rd.observable("response")  # [record, replica, source, probe]
        trajectory = rd.trajectory()           # [record, replica, param], replicas 0..3
        x_probe, x_source = rd.dataset("probes/x"), rd.dataset("sources/x")
        y_source = rd.dataset("sources/y")
        config = stored_config(rd)
    for k in range(0, len(trajectory), 7):
        for r in range(trajectory.shape[1]):
            expected = _linear_net_response(config.model, trajectory[k, r], x_probe, x_source, y_source,
                                            config.training.eta)
            # two float64 evaluations of the same polynomial in different orders: 1e-9 of the largest
            # response leaves room for the cancellation in f(theta') - f(theta)
            np.testing.assert_allclose(response[k, r], expected, rtol=0, atol=1e-9 * np.abs(expected).max())
    with RunReader(aging_runs["aging_tanh"]) as rd:
        response = rd.observable("response")
        x = rd.dataset("probes/x")[:, 0]
    order = np.argsort(x)
    slopes = np.diff(response[..., order], axis=-1) / np.diff(x[order])
    curvature = float(np.max(np.abs(np.diff(slopes, axis=-1))) / np.max(np.abs(slopes)))
    assert curvature > 1e-2, curvature


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # records where no probe flips
def test_sgd_reduces_the_feature_space_relative_to_gd_at_equal_loss(tmp_path):
    """Result 4, reduced: 16 replicas to t = 3000 (full size in docs/results.md).

    Expected from the seed before the run: SGD's noise reduces the feature space (a lower effective
    rank than GD's at equal training loss), and the reduced network is *more fragile* (its class
    flips closer to the data, its input gradients larger).

    Measured: the feature-space reduction holds (full size: 5.3 vs 7.0 and 5.1 vs 7.1 at losses
    0.05 and 0.03), and is asserted as the seed's direction. Fragility is mixed: among the probes
    whose class can be flipped within the search range, SGD's flips are closer (full size 0.16 vs
    0.26 input units at loss 0.05: the seed's direction), but fewer of its probes can be flipped at
    all (0.64 vs 0.94) and its input gradients are no larger (3.0 vs 3.2: against the seed). The
    last assertion holds that measured disagreement; it was written after the full-size run, so it
    is a regression check of dynsim's result, not a confirmation of the seed."""
    levels = [0.05, 0.03]
    out = {}
    for method in ("sgd", "gd"):
        path = _run(tmp_path, f"features_{method}", replicas=16, steps=30_000)
        with RunReader(path) as rd:
            loss = rd.observable("loss_train")
            flip = rd.observable("flip_distance")
            finite_flip = np.nanmean(np.where(np.isfinite(flip), flip, np.nan), axis=2)
            out[method] = {
                "erank": q.at_equal_loss(loss, rd.observable("effective_rank"), levels),
                "grad": q.at_equal_loss(loss, np.nanmean(rd.observable("input_grad_norm"), axis=2), levels),
                "flip": q.at_equal_loss(loss, finite_flip, levels),
            }
    sgd, gd = out["sgd"], out["gd"]
    assert np.all(np.isfinite(sgd["erank"])) and np.all(np.isfinite(gd["erank"])), out
    assert np.all(sgd["erank"] < gd["erank"] - 1.0), out   # the seed's direction
    assert np.all(sgd["flip"] < 0.8 * gd["flip"]), out      # the seed's direction ("more fragile")
    assert np.all(sgd["grad"] < 1.05 * gd["grad"]), out     # against the seed: measured, then locked in
