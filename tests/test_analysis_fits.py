"""analysis.fits and analysis.collapse on synthetic data with known answers (all seeded).

Noise model of the power-law tests: y[r, t] = A t^alpha exp(sigma eps[r, t]) with independent
standard normal eps. The ensemble mean is A e^(sigma^2 / 2) t^alpha times a factor whose
distribution is the same at every t, so log <y> has the true slope alpha with no t-dependent
bias: every tolerance below is sampling noise. With sigma = 0.3 and 64 replicas the relative
standard error of <y> is ~0.3 / 8 ~ 0.04 per point, and over 30 points spread across 3 decades
the slope's standard error is ~0.04 / (sqrt(30) * sd(log t) ~ 2) ~ 0.004: the 0.05 and 0.1
bounds below are >10 standard errors, far from flaky, yet a wrong weighting or a bias in the
window handling (errors of order 0.1 - 0.7) fails them.
"""
import dataclasses
import math

import numpy as np
import pytest

from analysis.collapse import CollapseFit, best_collapse, collapse_quality
from analysis.fits import DecayComparison, PowerLawFit, compare_decay_models, fit_power_law

SEED = 20261127
T = np.logspace(0, 3, 30)  # 3 decades, 10 points a decade


def _power_law_replicas(rng, alpha=-0.6, amplitude=2.0, sigma=0.3, n_rep=64, t=T):
    return amplitude * t ** alpha * np.exp(sigma * rng.standard_normal((n_rep, t.size)))


# --------------------------------------------------------------------------------------------------
# fit_power_law


def test_power_law_exponent_ci_and_amplitude():
    y = _power_law_replicas(np.random.default_rng(SEED))
    fit = fit_power_law(T, y, n_boot=1000, seed=1)
    lo, hi = fit.exponent_ci
    assert lo <= -0.6 <= hi
    assert 0 < hi - lo < 0.1
    assert fit.exponent == pytest.approx(-0.6, abs=0.05)
    # <y> = A e^(sigma^2/2) t^alpha; the intercept is as noisy as the mean (~4%), 10% is ~3 sigma
    assert fit.amplitude == pytest.approx(2.0 * math.exp(0.3 ** 2 / 2), rel=0.1)
    assert (fit.n_points, fit.n_replicas, fit.confidence) == (30, 64, 0.95)
    assert fit.window == (1.0, 1000.0)
    # log-mean noise ~0.04 per point: an RMS residual far above it would mean a wrong fit
    assert fit.residual_rms < 0.1
    s = fit.summary()
    assert s.startswith(f"alpha = {fit.exponent:.3f} [{lo:.3f}, {hi:.3f}] (95% CI, 64 replicas, t in [1, 1e3], 30 points")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.exponent = 0.0  # results are immutable


def test_power_law_bootstrap_is_seeded():
    y = _power_law_replicas(np.random.default_rng(SEED))
    a = fit_power_law(T, y, n_boot=200, seed=5)
    b = fit_power_law(T, y, n_boot=200, seed=5)
    c = fit_power_law(T, y, n_boot=200, seed=6)
    assert a == b
    assert a.exponent == c.exponent and a.exponent_ci != c.exponent_ci


def test_power_law_ci_coverage_over_seeds():
    # 20 independent data sets, each with its own 95% CI. If the intervals have their nominal
    # coverage, the number covering the truth is Binomial(20, 0.95): P(X <= 14) = 3e-4. A percentile
    # bootstrap with 64 replicas may undercover a little; even at a true coverage of 0.90,
    # P(X <= 14) = 0.011 -- so ">= 15 of 20" fails only for a clearly miscalibrated interval
    # (at coverage 0.85 it already fails 7% of the time, at 0.7 most of the time).
    covered, widths = 0, []
    for k in range(20):
        y = _power_law_replicas(np.random.default_rng(SEED + k))
        fit = fit_power_law(T, y, n_boot=200, seed=k)
        lo, hi = fit.exponent_ci
        covered += lo <= -0.6 <= hi
        widths.append(hi - lo)
    assert covered >= 15, f"95% CI covered the truth in only {covered} of 20 data sets"
    assert max(widths) < 0.1


def test_power_law_window_is_honoured():
    # alpha = -1 before t = 100 and -0.3 after (continuous at t = 100); the window (200, 1e4) holds
    # the second regime only, so its fit must not see the first.
    t = np.logspace(0, 4, 41)
    clean = np.where(t < 100, 1.0 / t, 0.01 * (t / 100.0) ** -0.3)
    y = clean * np.exp(0.3 * np.random.default_rng(SEED).standard_normal((64, t.size)))
    fit = fit_power_law(t, y, window=(200, 1e4), n_boot=500)
    inside = t[(t >= 200) & (t <= 1e4)]
    assert fit.window == (inside[0], inside[-1]) and fit.n_points == inside.size
    assert fit.exponent == pytest.approx(-0.3, abs=0.05)
    assert fit.exponent_ci[0] <= -0.3 <= fit.exponent_ci[1]
    # the early window sees the other regime, and the full range fits neither
    assert fit_power_law(t, y, window=(1, 50), n_boot=50).exponent == pytest.approx(-1.0, abs=0.05)
    whole = fit_power_law(t, y, n_boot=50)
    assert -0.9 < whole.exponent < -0.4 and whole.residual_rms > 0.1


def test_power_law_single_replica_uses_t_interval():
    y = _power_law_replicas(np.random.default_rng(SEED), n_rep=1)
    fit = fit_power_law(T, y[0])  # 1-D y = one replica
    assert fit.n_replicas == 1
    lo, hi = fit.exponent_ci
    assert lo <= -0.6 <= hi and hi - lo < 0.3
    # symmetric around the estimate: slope +- t-quantile * standard error
    assert fit.exponent - lo == pytest.approx(hi - fit.exponent, rel=1e-9)
    assert "1 replica, WLS t-interval" in fit.summary()


def test_power_law_nan_entries_are_ignored():
    y = _power_law_replicas(np.random.default_rng(SEED))
    # a fully missing time point is the same as not having it (same bootstrap draws: same R)
    holed = y.copy()
    holed[:, 7] = np.nan
    a = fit_power_law(T, holed, n_boot=200)
    b = fit_power_law(np.delete(T, 7), np.delete(y, 7, axis=1), n_boot=200)
    assert a.exponent == pytest.approx(b.exponent, rel=1e-12)
    assert a.exponent_ci == pytest.approx(b.exponent_ci, rel=1e-12)
    assert a.n_points == 29
    # scattered missing entries (20%): the mean is over the replicas measured at each time
    scattered = y.copy()
    scattered[np.random.default_rng(1).random(y.shape) < 0.2] = np.nan
    fit = fit_power_law(T, scattered, n_boot=200)
    assert fit.exponent == pytest.approx(-0.6, abs=0.05)
    assert fit.exponent_ci[0] <= -0.6 <= fit.exponent_ci[1]


def test_power_law_zero_variance_point_does_not_take_over():
    # every replica identical at the first time (a deterministic initial value): its variance is 0,
    # and without the floor its weight would be infinite (NaN fit or a line pinned to one point)
    y = _power_law_replicas(np.random.default_rng(SEED))
    y[:, 0] = 2.0 * math.exp(0.3 ** 2 / 2)
    fit = fit_power_law(T, y, n_boot=200)
    free = fit_power_law(T, _power_law_replicas(np.random.default_rng(SEED)), n_boot=200)
    assert np.isfinite([fit.exponent, *fit.exponent_ci]).all()
    assert fit.exponent == pytest.approx(-0.6, abs=0.05)
    # the floor caps its weight at 10x the typical one: the interval may narrow, not collapse
    width = fit.exponent_ci[1] - fit.exponent_ci[0]
    assert 0.5 * (free.exponent_ci[1] - free.exponent_ci[0]) < width


# --------------------------------------------------------------------------------------------------
# compare_decay_models


def test_decay_models_pick_power_law_on_power_law_data():
    y = _power_law_replicas(np.random.default_rng(SEED))
    cmp = compare_decay_models(T, y)
    assert isinstance(cmp, DecayComparison) and cmp.best == "power_law"
    aic = {k: m.aic for k, m in cmp.models.items()}
    assert aic["exponential"] - aic["power_law"] > 10
    assert aic["stretched_exponential"] - aic["power_law"] > 10
    assert cmp.models["power_law"].params["alpha"] == pytest.approx(-0.6, abs=0.05)
    assert set(cmp.models["stretched_exponential"].params) == {"A", "tau", "beta"}
    assert cmp.window == (1.0, 1000.0)
    assert cmp.summary().startswith("best = power_law; AIC: power_law")


def test_decay_models_pick_exponential_on_exponential_data():
    t = np.linspace(1, 300, 60)
    y = np.exp(-t / 50.0) * np.exp(0.3 * np.random.default_rng(SEED).standard_normal((64, t.size)))
    cmp = compare_decay_models(t, y)
    assert cmp.best == "exponential"
    aic = {k: m.aic for k, m in cmp.models.items()}
    assert aic["power_law"] - aic["exponential"] > 10
    assert cmp.models["exponential"].params["tau"] == pytest.approx(50.0, rel=0.05)
    # The stretched exponential contains the exponential (beta = 1): it fits as well and loses only
    # its extra parameter's penalty, AIC + 2 -- never by > 10; it must land on beta ~ 1.
    stretched = cmp.models["stretched_exponential"]
    assert stretched.params["beta"] == pytest.approx(1.0, abs=0.05)
    assert 0 < aic["stretched_exponential"] - aic["exponential"] <= 2 + 1e-6
    assert stretched.rss <= cmp.models["exponential"].rss + 1e-12


def test_decay_models_noiseless_and_short_window_warning():
    t = np.linspace(1, 300, 40)
    cmp = compare_decay_models(t, np.exp(-t / 50.0))  # one noiseless replica: RSS ~ 0 must not give -inf
    assert cmp.best == "exponential" and all(np.isfinite(m.aic) for m in cmp.models.values())
    assert cmp.models["exponential"].params["tau"] == pytest.approx(50.0, rel=1e-6)
    short = compare_decay_models(T, T ** -0.6, window=(10, 100))
    assert "under 1.5 decades" in short.summary()
    assert "under 1.5 decades" not in cmp.summary()


# --------------------------------------------------------------------------------------------------
# collapse


def _aging_data(mu, rng, *, n_rep=32, noise=0.05, beta=0.7):
    """C = exp(-(tau / t_w^mu)^beta) plus independent Gaussian replica noise, [W, L, replica]."""
    t_w = np.logspace(1, 3, 6)   # 2 decades, 6 waiting times
    tau = np.logspace(0, 4, 41)  # 4 decades
    clean = np.exp(-(tau[None, :] / t_w[:, None] ** mu) ** beta)
    return t_w, tau, clean, clean[:, :, None] + noise * rng.standard_normal(clean.shape + (n_rep,))


def _reference_quality(t_w, tau, values, mu):
    """Direct transcription of the definition with np.interp, pair by pair."""
    log_x = np.log(tau)[None, :] - mu * np.log(t_w)[:, None]
    diffs = []
    for i in range(len(t_w)):
        for j in range(len(t_w)):
            mi, mj = np.isfinite(values[i]), np.isfinite(values[j])
            if i == j or mj.sum() < 2:
                continue
            xi, xj = log_x[i, mi], log_x[j, mj]
            inside = (xi >= xj[0]) & (xi <= xj[-1])
            if inside.sum() >= 2:
                diffs.append(values[i, mi][inside] - np.interp(xi[inside], xj, values[j, mj]))
    if not diffs:
        return math.inf
    d = np.concatenate(diffs)
    return float(np.mean(d ** 2) / np.nanvar(values))


def test_collapse_quality_matches_definition():
    rng = np.random.default_rng(SEED)
    checked = 0
    for _ in range(100):
        n_w, n_l = rng.integers(2, 7), rng.integers(2, 15)
        t_w = np.sort(rng.uniform(1, 100, n_w))
        tau = np.sort(rng.uniform(0.5, 1000, n_l))
        values = rng.standard_normal((n_w, n_l))
        values[rng.random(values.shape) < 0.3] = np.nan
        if np.isfinite(values).sum() < 2:
            continue
        mu = rng.uniform(-0.5, 2.0)
        expected = _reference_quality(t_w, tau, values, mu)
        got = collapse_quality(t_w, tau, values, mu)
        assert got == expected or got == pytest.approx(expected, rel=1e-10)
        checked += np.isfinite(expected)
    assert checked > 30  # most random cases do overlap


def test_collapse_quality_perfect_and_disjoint():
    t_w, tau, clean, _ = _aging_data(0.8, np.random.default_rng(SEED))
    # exact collapse: only the linear-interpolation error is left (smooth curve, 10 points a decade)
    assert collapse_quality(t_w, tau, clean, 0.8) < 1e-4
    assert collapse_quality(t_w, tau, clean, 0.0) > 0.1
    # x ranges of the two curves do not overlap at all
    assert collapse_quality([1.0, 1e6], [1.0, 2.0, 3.0], [[1.0, 0.5, 0.2], [0.9, 0.4, 0.1]], 1.0) == math.inf


def test_best_collapse_recovers_sub_aging_exponent():
    t_w, tau, _, values = _aging_data(0.8, np.random.default_rng(SEED))
    fit = best_collapse(t_w, tau, values, n_boot=200)
    assert isinstance(fit, CollapseFit)
    lo, hi = fit.mu_ci
    assert lo <= fit.mu <= hi and lo <= 0.8 <= hi
    assert hi - lo < 0.15
    assert fit.mu == pytest.approx(0.8, abs=0.03)
    # the collapse at mu is far better than none (mu = 0)
    assert fit.quality < 0.05 * fit.quality_at_zero
    assert fit.quality <= fit.quality_curve.min() + 1e-15  # refinement never worse than the grid
    assert fit.mu_grid.shape == fit.quality_curve.shape == (201,)
    assert fit.summary().startswith(f"mu = {fit.mu:.3f} [{lo:.3f}, {hi:.3f}] (95% CI)")
    # the flat range (quality within 10% of the minimum) holds the truth and is a proper interval
    flat = fit.mu_flat_range
    assert flat[0] <= 0.8 <= flat[1] and flat[1] - flat[0] < 0.3
    inside = (fit.mu_grid >= flat[0]) & (fit.mu_grid <= flat[1])
    assert np.all(fit.quality_curve[inside] <= 1.1 * fit.quality_curve.min() + 1e-15)


def test_best_collapse_simple_aging_with_unmeasured_pairs():
    # mu = 1, and the pairs a run of 2e4 steps cannot hold (t_w + tau > 2e4) are NaN, as in
    # dynsim's two-time grid: the collapse must use the measured part only.
    t_w, tau, _, values = _aging_data(1.0, np.random.default_rng(SEED + 1))
    values[(t_w[:, None] + tau[None, :] > 2e4)] = np.nan
    fit = best_collapse(t_w, tau, values, n_boot=200)
    assert fit.mu == pytest.approx(1.0, abs=0.03)
    assert fit.mu_ci[0] <= 1.0 <= fit.mu_ci[1]
    assert fit.quality < 0.05 * fit.quality_at_zero


def test_best_collapse_single_replica_has_no_ci():
    t_w, tau, _, values = _aging_data(0.8, np.random.default_rng(SEED), n_rep=1, noise=0.01)
    fit = best_collapse(t_w, tau, values[:, :, 0], mu_grid=np.linspace(0, 2, 101))
    assert fit.mu == pytest.approx(0.8, abs=0.03)
    assert all(math.isnan(v) for v in fit.mu_ci)
    assert "no CI (single replica)" in fit.summary()


# --------------------------------------------------------------------------------------------------
# bad input


_Y = np.ones((3, 5))
_TW, _TAU = np.array([10.0, 100.0]), np.array([1.0, 10.0, 100.0])


@pytest.mark.parametrize("call, name", [
    (lambda: fit_power_law([0.0, 1, 2, 3, 4], _Y), "t"),                      # non-positive t
    (lambda: fit_power_law(np.ones((2, 5)), _Y), "t"),                        # wrong shape of t
    (lambda: fit_power_law([1.0, 3, 2, 4, 5], _Y), "t"),                      # unsorted t
    (lambda: fit_power_law([1.0, 2, 3, 4], _Y), "y"),                         # shape mismatch
    (lambda: fit_power_law([1.0, 2, 3, 4, 5], np.full((3, 5), np.nan)), "y"),  # all NaN
    (lambda: fit_power_law([1.0, 2, 3, 4, 5], -_Y), "y"),                     # non-positive y
    (lambda: fit_power_law([1.0, 2, 3, 4, 5], _Y, window=(1.5, 3.5)), "window"),  # 2 points in window
    (lambda: fit_power_law([1.0, 2, 3, 4, 5], _Y, window=(4, 2)), "window"),
    (lambda: fit_power_law([1.0, 2, 3, 4, 5], _Y, confidence=95), "confidence"),
    (lambda: fit_power_law([1.0, 2, 3, 4, 5], _Y, n_boot=0), "n_boot"),
    (lambda: compare_decay_models([1.0, 2], _Y[:, :2]), "y"),                 # fewer than 3 points
    (lambda: compare_decay_models([-1.0, 2, 3, 4, 5], _Y), "t"),
    (lambda: collapse_quality(_TW, _TAU, np.ones((3, 2)), 1.0), "values"),    # transposed
    (lambda: collapse_quality(_TW, _TAU[::-1], np.ones((2, 3)), 1.0), "tau"),
    (lambda: collapse_quality(-_TW, _TAU, np.ones((2, 3)), 1.0), "t_w"),
    (lambda: collapse_quality(_TW, _TAU, np.full((2, 3), np.nan), 1.0), "values"),
    (lambda: collapse_quality(_TW, _TAU, np.ones((2, 3)), 1.0), "values"),    # constant: undefined
    (lambda: collapse_quality(_TW, _TAU, np.ones((2, 3)), math.nan), "mu"),
    (lambda: best_collapse(_TW, _TAU, np.ones((2, 3, 4, 1))), "values"),
    (lambda: best_collapse(_TW, _TAU, np.eye(2, 3), mu_grid=[0.0, 1.0]), "mu_grid"),
    (lambda: best_collapse(_TW, _TAU, np.eye(2, 3), confidence=0.0), "confidence"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()


def test_result_types_are_frozen_dataclasses():
    for cls in (PowerLawFit, DecayComparison, CollapseFit):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen


def test_master_curve_estimate_is_smooth_and_its_interval_is_real():
    """The master-curve quality is smooth in mu (no kink for the bootstrap to pile on): its bootstrap
    interval has a width, where the pairwise quality's can be a single point, and the estimate is
    within 0.01 of the true exponent of synthetic aging data (the degree-10 polynomial's bias there
    is below 0.005; the sampling interval is about +-0.005 wide)."""
    import analysis.collapse as collapse

    for mu, seed in ((0.8, SEED), (1.3, SEED + 1)):
        t_w, tau, _, values = _aging_data(mu, np.random.default_rng(seed))
        fit = best_collapse(t_w, tau, values, n_boot=100)
        lo, hi = fit.mu_master_ci
        assert lo < fit.mu_master < hi and abs(fit.mu_master - mu) < 0.01 and 1e-4 < hi - lo < 0.05
        assert "master-curve estimate" in fit.summary()
    # smooth: second differences of the quality on a fine grid are small against the quality itself
    t_w, tau, _, values = _aging_data(0.8, np.random.default_rng(SEED))
    mean = np.nanmean(values, axis=2)
    mask = np.isfinite(mean)
    flat = mean.reshape(-1, 1)
    variance = np.nanvar(flat, axis=0)
    grid = np.linspace(0.7, 0.9, 81)
    q = np.array([collapse._master_qualities(np.log(t_w), np.log(tau), mask, flat, variance, m)[0] for m in grid])
    curvature = np.abs(np.diff(q, 2))
    assert curvature.max() < 0.05 * q.min()  # a kink would show as one large second difference
