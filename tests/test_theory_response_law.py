"""The response-law model's analytic solutions (``dynsim.theory.response_law``) against the compiled
model run through its kind, and against their own differential equations.

The solutions are gradient flow (t = eta * step); the compiled law takes Euler steps of size eta. With
eta = 1e-3 the per-step error of the log-residual is ~ (eta K A)^2 / 2 and the age's left Riemann
sum is off by ~ eta A0 / 2, so over the ages tested the solutions agree to ~1e-3 relative: the
tolerances below are 3e-3 (and 2e-3 in input units for the boundary, plus the probe grid's linear
interpolation).
"""
import numpy as np
import pytest
import sympy

from dynsim.cli import main as dynsim_main
from dynsim.config import dump_toml
from dynsim.store import RunReader
from dynsim.theory.response_law import (A0, I_sym, K, age, beta, f0, one_sample, solutions, t, tau,
                                        two_sample_boundary, y)

from conftest import SEED

ETA = 2e-4


def _one_sample_run(tmp_path, loss, model, steps, name="one"):
    """One training sample at x = 0.5 (target +1), probed there; a Gaussian kernel, f0 = 0."""
    tables = dict(run=dict(seed=SEED, replicas=1, steps=steps),
                  model=dict(kind="response_law", kernel="gaussian", initial="zero") | model,
                  task=dict(kind="encoding", n_train=1, n_test=0, n_probes=1, n_sources=1),
                  training=dict(method="gd", eta=ETA, loss=loss), record=dict(n_records=30, observables=["output"]))
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(tables))
    out = tmp_path / f"{name}.h5"
    assert dynsim_main(["run", str(path), "-o", str(out), "-q", "--overwrite"]) == 0
    with RunReader(out) as rd:
        return rd.times, rd.observable("output")[:, 0, 0, 0]


def test_the_solutions_solve_their_equations():
    law = solutions()
    # squared loss in the age: df/dI = -K (f - y), f(0) = f0
    assert sympy.simplify(law.squared.diff(I_sym) + K * (law.squared - y)) == 0
    assert law.squared.subs(I_sym, 0) == f0
    # the age is the integral of the amplitude (beta != 1 branch, and beta = 1)
    general = law.age.args[1][0]
    assert sympy.simplify(general.diff(t) - law.amplitude) == 0 and sympy.simplify(general.subs(t, 0)) == 0
    assert sympy.simplify(law.age_beta_one.diff(t) - law.amplitude.subs(beta, 1)) == 0
    # cross-entropy: dz/dI = K / (1 + e^z), checked numerically at a few points (Lambert W)
    z = sympy.lambdify((I_sym, K, sympy.Symbol("z_0", real=True)), law.cross_entropy, "mpmath")
    for ages, k, start in ((0.3, 1.2, -0.5), (5.0, 0.7, 0.4), (40.0, 2.0, 1.5)):
        h = 1e-6
        slope = (z(ages + h, k, start) - z(ages - h, k, start)) / (2 * h)
        assert float(slope) == pytest.approx(k / (1 + np.exp(float(z(ages, k, start)))), rel=1e-6)
    # sigmoid output: dG/dz = 1 / (p (1 - p)^2)
    zs = sympy.Symbol("z", real=True)
    p = 1 / (1 + sympy.exp(-zs))
    assert sympy.simplify(law.sigmoid_squared_g.diff(zs) - 1 / (p * (1 - p) ** 2)) == 0
    # the printed statements: beta = 1 gives the power (1 + t/tau)^(-K A0 tau); beta > 1 freezes
    assert sympy.simplify(law.squared_power + K * A0 * tau) == 0
    assert sympy.simplify(law.squared_frozen - sympy.exp(-K * A0 * tau / (beta - 1))) == 0


@pytest.mark.parametrize("loss", ["squared", "cross_entropy", "sigmoid_squared"])
@pytest.mark.parametrize("beta_value", [0.5, 1.0])
def test_one_sample_against_the_compiled_law(tmp_path, loss, beta_value):
    model = dict(kernel_scale=1.5, amplitude="power_law", amplitude_scale=2.0, amplitude_tau=0.5,
                 amplitude_beta=beta_value)
    times, f = _one_sample_run(tmp_path, loss, model, steps=100_000)
    expected = one_sample(loss, 0.0, 1.5, age(times, 2.0, 0.5, beta_value))
    if loss == "squared":  # compare the residual 1 - f, which decays
        np.testing.assert_allclose(1 - f[1:], 1 - expected[1:], rtol=3e-3)
        assert 1 - f[-1] < 1e-2  # it decays over the range tested
    else:  # the logit grows like a logarithm: compare z itself
        np.testing.assert_allclose(f[1:], expected[1:], rtol=3e-3)
        assert f[-1] > 0.5  # the logit moved well away from its start at 0


def test_beta_above_one_freezes_the_residual_and_beta_one_is_a_power_law(tmp_path):
    # beta = 2, A0 = 1, tau = 0.5, K = 1: the residual stops at exp(-K A0 tau / (beta - 1)) = e^-0.5
    times, f = _one_sample_run(tmp_path, "squared", dict(amplitude="power_law", amplitude_tau=0.5,
                                                         amplitude_beta=2.0), steps=500_000, name="frozen")
    frozen = float(solutions().squared_frozen.subs({K: 1, A0: 1, tau: sympy.Rational(1, 2), beta: 2}))
    # at t = 100 the age is 0.5 (1 - 1/201) short of its limit: the residual is 0.25 % above it
    assert 1 - f[-1] == pytest.approx(frozen, rel=4e-3)
    # beta = 1: log(1 - f) against log(1 + t/tau) has slope -K A0 tau = -1.5 * 2 * 0.5
    times, f = _one_sample_run(tmp_path, "squared", dict(kernel_scale=1.5, amplitude="power_law", amplitude_scale=2.0,
                                                         amplitude_tau=0.5, amplitude_beta=1.0), steps=100_000,
                               name="power")
    late = times > 2.0
    slope = np.polyfit(np.log1p(times[late] / 0.5), np.log(1 - f[late]), 1)[0]
    assert slope == pytest.approx(-1.5, rel=3e-3)


def test_two_sample_boundary_against_the_compiled_law(tmp_path):
    """Samples at 0.25 (y = 0) and 0.75 (y = 1, labels '01'), a Gaussian kernel of length 0.2, f0 = 0: the
    zero crossing of f on a 401-point probe grid follows x_b(I) to the boundary's end at x1 = 0.25."""
    length = 0.2
    tables = dict(run=dict(seed=SEED, replicas=1, steps=100_000),
                  model=dict(kind="response_law", kernel="gaussian", length_scale=length, initial="zero",
                             amplitude="power_law", amplitude_tau=0.5, amplitude_beta=0.5),
                  task=dict(kind="encoding", n_train=2, n_test=0, n_probes=401, n_sources=1, labels="01"),
                  training=dict(method="gd", eta=ETA), record=dict(n_records=30, observables=["output"]))
    path = tmp_path / "two.toml"
    path.write_text(dump_toml(tables))
    out = tmp_path / "two.h5"
    assert dynsim_main(["run", str(path), "-o", str(out), "-q"]) == 0
    with RunReader(out) as rd:
        times, f, x = rd.times, rd.observable("output")[:, 0, :, 0], rd.data().x_probe[:, 0]
    expected = two_sample_boundary(age(times, 1.0, 0.5, 0.5), 0.25, 0.75, 0.0, 1.0, length)
    checked = 0
    for k in range(1, len(times)):
        sign = np.flatnonzero(np.diff(np.sign(f[k])) != 0)
        if len(sign) != 1 or not 0.01 < expected[k] < 0.99:
            continue
        i = sign[0]
        crossing = x[i] - f[k, i] * (x[i + 1] - x[i]) / (f[k, i + 1] - f[k, i])
        assert crossing == pytest.approx(expected[k], abs=2e-3), times[k]
        checked += 1
    assert checked >= 10 and expected[-1] == pytest.approx(0.25, abs=0.02)
