"""dynsim.theory.kernels: infinite-width kernels at initialisation against Monte Carlo over random
hidden units, quadrature against closed forms, and the simulator's wide-network NTK against the limit.
"""
import dataclasses

import numpy as np
import pytest
from scipy.special import erf, expit

from dynsim.simple_experiment import Simulation
from dynsim.models.activations import ACTIVATIONS
from dynsim.models.simple import SimpleNet
from dynsim.observables import allocate
from dynsim.theory import gauss_hermite_expectations, gaussian_expectations, init_kernels

from conftest import SEED, small_config

# NumPy/SciPy activations written independently of dynsim (and of SymPy).
REFERENCE = {
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0.0).astype(float)),
    "tanh": (np.tanh, lambda z: 1.0 / np.cosh(z) ** 2),
    "sigmoid": (expit, lambda z: expit(z) * expit(-z)),
    "erf": (erf, lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-z * z)),
    "softplus": (lambda z: np.logaddexp(0.0, z), expit),
}

# Monte Carlo: 2e5 random hidden units; a mean is compared with its estimate within 4 standard
# errors (a two-sided 4-sigma band: ~6e-5 chance per comparison for a correct formula; seeded, so
# the outcome is fixed). A wrong closed form or a missing factor is off by many standard errors.
N_UNITS = 200_000
N_SE = 4.0


def _inputs():
    """Four inputs in D = 3 (fixed, seeded): generic pairs, a repeated one (x = x') and a near-opposite one."""
    rng = np.random.default_rng(SEED + 1)
    x = rng.normal(size=(3, 3))
    return np.vstack([x, -0.8 * x[0]])


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_infinite_width_kernels_match_monte_carlo(name):
    """K, Kdot, the expected NTK (ntk scaling, both biases) and the NNGP kernel vs Monte Carlo.

    The per-unit NTK term s^-2-normalised, a^2 sigma'(u) sigma'(v) (x.x' + 1) + sigma(u) sigma(v),
    plus 1 for the output bias, is averaged over N_UNITS units drawn exactly as the model's init
    draws them (w ~ N(0, sigma_w^2/D), b ~ N(0, sigma_b^2), a ~ N(0, sigma_a^2)).
    """
    model = SimpleNet(input_dim=3, width=N_UNITS, activation=name, scaling="ntk", weight_std=1.3, bias_std=0.6,
                      output_std=0.9, output_bias=True)
    x = _inputs()
    theory = init_kernels(model, x, x)
    rng = np.random.default_rng(SEED + ACTIVATIONS[name])
    w = rng.normal(0.0, model.weight_std / np.sqrt(3), size=(N_UNITS, 3))
    b = rng.normal(0.0, model.bias_std, size=N_UNITS)
    a = rng.normal(0.0, model.output_std, size=N_UNITS)
    act, dact = REFERENCE[name]
    pre = x @ w.T + b                                         # [4, units]
    h, hp = act(pre), dact(pre)
    for i in range(len(x)):
        for j in range(i, len(x)):
            samples = {
                "value": h[i] * h[j],
                "derivative": hp[i] * hp[j],
                "ntk": a ** 2 * hp[i] * hp[j] * (x[i] @ x[j] + 1.0) + h[i] * h[j] + 1.0,
                "nngp": a ** 2 * h[i] * h[j],
            }
            for key, values in samples.items():
                mean, se = values.mean(), values.std(ddof=1) / np.sqrt(N_UNITS)
                predicted = getattr(theory, key)[i, j]
                # + 1e-12: linear's Kdot = 1 has zero variance, and is then compared to rounding.
                assert abs(predicted - mean) <= N_SE * se + 1e-12, (key, i, j, predicted, mean, se)


@pytest.mark.parametrize("name", ["linear", "erf"])
def test_quadrature_reproduces_smooth_closed_forms(name):
    """Gauss-Hermite with the default nodes vs the closed forms (linear, arcsine): 1e-10.

    Both integrands are smooth (entire), so the rule converges exponentially; 1e-10 is far above
    its error and far below any formula mistake. (relu's kink makes the rule converge slowly, so
    relu is only checked against Monte Carlo.)
    """
    q = np.array([0.2, 1.0, 2.5, 1.7])
    q_p = np.array([0.9, 1.0, 0.4, 1.7])
    c = np.array([0.1, -0.7, 0.9, 1.0]) * np.sqrt(q * q_p)   # the last: x = x' (correlation 1)
    closed = gaussian_expectations(name, q, q_p, c)
    quad = gauss_hermite_expectations(name, q, q_p, c)
    np.testing.assert_allclose(quad[0], closed[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(quad[1], closed[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "softplus"])
def test_quadrature_is_converged(name):
    """Default (automatic) nodes vs 800: equal to 1e-9 for variances up to 3 (see quadrature_nodes:
    the typical init, sigma_w = 1 and |x|^2 ~ D, gives q ~ 1 + sigma_b^2)."""
    q = np.array([0.3, 1.0, 3.0])
    q_p = np.array([2.0, 1.0, 3.0])
    c = np.array([0.5, -0.9, 1.0]) * np.sqrt(q * q_p)
    base = gauss_hermite_expectations(name, q, q_p, c)
    fine = gauss_hermite_expectations(name, q, q_p, c, nodes=800)
    np.testing.assert_allclose(base, fine, rtol=1e-9, atol=1e-12)


def _engine_ntk_error(name, width, replicas=32):
    """RMS over replicas and probe pairs of (engine NTK at init - infinite-width NTK)."""
    cfg = small_config(model=dict(activation=name, width=width, scaling="ntk", input_dim=2, bias_std=0.5,
                                  output_bias=True),
                       run=dict(replicas=replicas, seed=SEED + width), task=dict(kind="teacher", n_probes=4))
    sim = Simulation(cfg)
    params = sim.initial_params()
    buffers = allocate(["ntk"], replicas, sim.data.x_probe.shape[0], sim.data.x_source.shape[0])
    sim.measure(params, buffers)
    limit = init_kernels(cfg.model, sim.data.x_probe, sim.data.x_probe).ntk
    return np.sqrt(np.mean((buffers["ntk"] - limit) ** 2))


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_wide_network_ntk_converges_like_inverse_sqrt_width(name):
    """Engine NTK at init vs the infinite-width NTK: the RMS error falls like N^-1/2.

    Fitted log-log slope over N = 256 .. 4096 (independent seeds per N, 32 replicas each). The
    empirical NTK is a mean of N i.i.d. unit terms whose expectation is the limit (at every N), so
    the slope is -1/2 up to sampling noise; the band [-0.65, -0.35] is ~5 standard errors of the
    fitted slope (each RMS has ~7% relative noise), and excludes -1 or 0 (a biased limit).
    """
    widths = np.array([256, 512, 1024, 2048, 4096])
    errors = np.array([_engine_ntk_error(name, int(n)) for n in widths])
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.65 < slope < -0.35, (slope, errors)
    assert errors[-1] < 0.1, errors  # and small at N = 4096 in absolute terms (the kernel is O(1))


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_standard_scaling_expected_ntk_grows_with_width(name):
    """With standard scaling E Theta = sigma_a^2 (x.x' + 1) Kdot + N K: the replica mean of the
    engine's NTK at N = 512 matches it within 4 standard errors over 64 replicas."""
    replicas, width = 64, 512
    cfg = small_config(model=dict(activation=name, width=width, scaling="standard", input_dim=2, bias_std=0.5),
                       run=dict(replicas=replicas), task=dict(kind="teacher", n_probes=3))
    sim = Simulation(cfg)
    params = sim.initial_params()
    buffers = allocate(["ntk"], replicas, 3, sim.data.x_source.shape[0])
    sim.measure(params, buffers)
    theory = init_kernels(cfg.model, sim.data.x_probe, sim.data.x_probe).ntk
    mean = buffers["ntk"].mean(axis=0)
    se = buffers["ntk"].std(axis=0, ddof=1) / np.sqrt(replicas)
    assert np.all(np.abs(mean - theory) <= N_SE * se), (mean, theory, se)
    # The width-independent (ntk-scaling) formula is off by the (N - 1) K(x, x) > 0 term on the
    # diagonal: the parameterisation matters, and the test can tell.
    ntk_limit = init_kernels(dataclasses.replace(cfg.model, scaling="ntk"), sim.data.x_probe, sim.data.x_probe).ntk
    assert np.all(np.abs(np.diag(mean) - np.diag(ntk_limit)) > N_SE * np.diag(se))
