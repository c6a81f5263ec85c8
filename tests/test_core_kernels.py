"""Compiled scalar kernels against finite differences, NumPy, and published RNG vectors."""
import numpy as np
import pytest
from numba import njit

from dynsim import rng as R
from dynsim.losses import LOSSES, loss_derivative, loss_value
from dynsim.models.activations import (ACTIVATIONS, activate, activate_derivative,
                                       activate_second_derivative)
from dynsim.models.simple import SimpleNet, add_gradient, forward

from conftest import SEED
from numpy_reference import ACTIVATION, forward_and_gradients

# Central differences with step H have truncation error ~H^2 |f'''|/6 ~ 1e-11 and rounding error
# ~eps/H ~ 1e-11 for O(1) functions, so 1e-8 absolute is a safe bound that still catches any
# wrong formula (errors of order 1e-2 or more).
H = 1e-5
FD_ATOL = 1e-8


def _away_from_kink(rng, n):
    """Seeded points in [-3, 3] at least 1e-3 from 0 (relu's kink, where no derivative exists)."""
    z = rng.uniform(-3.0, 3.0, n)
    return np.where(np.abs(z) < 1e-3, 0.5, z)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_derivatives_match_central_differences(name, rng):
    code = ACTIVATIONS[name]
    for z in _away_from_kink(rng, 50):
        fd1 = (activate(z + H, code) - activate(z - H, code)) / (2 * H)
        fd2 = (activate_derivative(z + H, code) - activate_derivative(z - H, code)) / (2 * H)
        assert activate_derivative(z, code) == pytest.approx(fd1, abs=FD_ATOL)
        assert activate_second_derivative(z, code) == pytest.approx(fd2, abs=FD_ATOL)
        # and the value itself against NumPy/SciPy (an independent implementation)
        assert activate(z, code) == pytest.approx(float(ACTIVATION[name][0](np.array(z))), rel=1e-14, abs=1e-15)


def test_fast_tanh_is_within_5_ulp_of_libm():
    from dynsim.models.activations import fast_tanh

    z = np.concatenate([np.linspace(-25, 25, 100_000), np.logspace(-12, 1.3, 5000), -np.logspace(-12, 1.3, 5000)])
    got = np.array([fast_tanh(v) for v in z])
    rel = np.abs(got - np.tanh(z)) / np.abs(np.tanh(z))
    assert rel.max() < 5 * np.finfo(float).eps  # measured 8.8e-16 (4 ulp) on this grid, 1.1e-15 on a 20x denser one
    assert fast_tanh(0.0) == 0.0 and fast_tanh(30.0) == 1.0 and fast_tanh(-30.0) == -1.0


@pytest.mark.parametrize("name", ["sigmoid", "softplus", "tanh", "erf"])
def test_activations_stay_finite_for_large_inputs(name):
    code = ACTIVATIONS[name]
    for z in (-800.0, -50.0, 50.0, 800.0):
        assert np.isfinite(activate(z, code)) and np.isfinite(activate_derivative(z, code))


@pytest.mark.parametrize("loss", list(LOSSES))
def test_loss_derivative_matches_central_differences(loss, rng):
    code = LOSSES[loss]
    for f, y in zip(rng.normal(0, 2, 40), rng.choice([-1.0, 1.0], 40)):
        fd = (loss_value(f + H, y, code) - loss_value(f - H, y, code)) / (2 * H)
        assert loss_derivative(f, y, code) == pytest.approx(fd, abs=FD_ATOL)
    # cross-entropy stays finite far from the decision boundary
    assert np.isfinite(loss_value(-1000.0, 1.0, code)) and np.isfinite(loss_derivative(-1000.0, 1.0, code))


@njit(cache=True)
def _forward_and_gradient(theta, x, mi, mf):
    z = np.empty(mi[2])
    h = np.empty(mi[2])
    g = np.zeros(theta.shape[0])
    f = forward(theta, x, mi, mf, z, h)
    add_gradient(theta, x, mi, mf, z, h, 1.0, g)
    return f, g


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("scaling,hidden_bias,output_bias", [("standard", True, True), ("ntk", False, False),
                                                             ("ntk", True, False)])
def test_network_gradient_matches_finite_differences_and_numpy(activation, scaling, hidden_bias, output_bias, rng):
    net = SimpleNet(input_dim=3, width=5, activation=activation, scaling=scaling, hidden_bias=hidden_bias,
                    output_bias=output_bias, bias_std=0.7)
    mi, mf = net.kernel_arrays()
    theta = net.init_params(SEED, 1)[0]
    if output_bias:
        theta[-1] = 0.3
    for x in rng.normal(0, 1, (4, 3)):
        f, g = _forward_and_gradient(theta, x, mi, mf)
        fd = np.empty_like(theta)
        for j in range(theta.size):
            tp, tm = theta.copy(), theta.copy()
            tp[j] += H
            tm[j] -= H
            fd[j] = (_forward_and_gradient(tp, x, mi, mf)[0] - _forward_and_gradient(tm, x, mi, mf)[0]) / (2 * H)
        # relu: a pre-activation within H of the kink would make the difference quotient wrong
        blocks = net.unpack(theta)
        z = blocks["W"] @ x + (blocks["b"] if hidden_bias else 0.0)
        if activation == "relu" and np.min(np.abs(z)) < 1e-3:
            continue
        np.testing.assert_allclose(g, fd, atol=FD_ATOL)
        f_ref, g_ref = forward_and_gradients(theta, x[None, :], net.attributes())
        np.testing.assert_allclose(f, f_ref[0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(g, g_ref[0], rtol=1e-13, atol=1e-15)


# --- random numbers ---------------------------------------------------------------------------

# Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors).
KAT = [((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_matches_random123_known_answers(counter, key, expected):
    words = R.philox4x32_10(*(np.uint64(c) for c in counter), *(np.uint64(k) for k in key))
    assert tuple(int(w) for w in words) == expected


@njit(cache=True)
def _draw_many(seed, n):
    u = np.empty(2 * n)
    z = np.empty(2 * n)
    for k in range(n):
        u[2 * k], u[2 * k + 1] = R.uniform_pair(seed, 7, R.STREAM_NOISE, k // 64, k % 64)
        z[2 * k], z[2 * k + 1] = R.normal_pair(seed, 7, R.STREAM_NOISE, k // 64, k % 64)
    return u, z


def test_uniform_and_normal_moments():
    n = 200_000
    u, z = _draw_many(np.uint64(SEED), n // 2)
    assert 0.0 < u.min() and u.max() < 1.0
    # Each moment is compared with its exact value within 5 standard errors of the sample mean
    # (false-failure probability below 1e-6 per check).
    se = lambda var: 5.0 * np.sqrt(var / n)  # noqa: E731
    assert abs(u.mean() - 0.5) < se(1 / 12)
    assert abs(np.mean(u ** 2) - 1 / 3) < se(4 / 45)
    assert abs(z.mean()) < se(1.0)
    assert abs(np.mean(z ** 2) - 1.0) < se(2.0)
    assert abs(np.mean(z ** 4) - 3.0) < se(96.0)
    # lag-1 correlation of consecutive draws is zero
    assert abs(np.mean(z[1:] * z[:-1])) < se(1.0)


def test_draws_depend_on_every_key_component():
    base = R.uniform_pair(np.uint64(1), 0, 1, 5, 3)
    for args in [(np.uint64(2), 0, 1, 5, 3), (np.uint64(1), 1, 1, 5, 3), (np.uint64(1), 0, 2, 5, 3),
                 (np.uint64(1), 0, 1, 6, 3), (np.uint64(1), 0, 1, 5, 4), (np.uint64(1), 0, 1, 5 + 2 ** 32, 3)]:
        assert R.uniform_pair(*args) != base


def test_index_draws_are_uniform_chi_square():
    n, p = 60_000, 12
    counts = np.bincount([R.index_at(np.uint64(SEED), 3, R.STREAM_BATCH, s, 0, p) for s in range(n)], minlength=p)
    chi2 = np.sum((counts - n / p) ** 2 / (n / p))
    # chi-square with 11 degrees of freedom: P(chi2 > 35) < 1e-3
    assert chi2 < 35.0


def test_permutation_is_a_permutation_and_varies_by_epoch():
    a = np.empty(50, dtype=np.int64)
    b = np.empty(50, dtype=np.int64)
    R.fill_permutation(np.uint64(SEED), 0, R.STREAM_PERMUTATION, 0, a)
    R.fill_permutation(np.uint64(SEED), 0, R.STREAM_PERMUTATION, 1, b)
    assert sorted(a) == list(range(50)) and sorted(b) == list(range(50))
    assert not np.array_equal(a, b)
