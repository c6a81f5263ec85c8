"""The max-norm chain of the wormhole paper (dynsim.theory.chain) against closed forms, high-precision
quadrature, Monte Carlo of the selection, and a NumPy construction of the chain itself."""
import math
import re

import mpmath
import numpy as np
import pytest
import sympy
from scipy import special, stats

from dynsim.theory.chain import (SELECTIONS, asymptotic_squared_gain, collapse_factor, expected_squared_gain,
                                 perpendicular_to_parallel_ratios, selection_likelihood)

# the paper's smallest configuration: keep 20 of 500 candidate rows per layer
K, N = 20, 500


def _within_standard_errors(estimate, standard_error, reference, count=4.0):
    return abs(estimate - reference) <= count * standard_error


# ---- arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("k,n,selection,message", [
    (0, 5, "magnitude", "need 1 <= k <= n"), (6, 5, "negative", "got k=6, n=5: choose k between 1 and n"),
    (2.5, 5, "magnitude", "k (rows kept per layer) must be an integer"),
    (2, 5.0, "magnitude", "n (candidate rows per layer) must be an integer"),
    (2, 5, "largest", "selection must be one of magnitude, negative, got 'largest'")])
def test_bad_arguments_are_refused_with_the_argument_named(k, n, selection, message):
    for function in (expected_squared_gain, asymptotic_squared_gain, collapse_factor):
        with pytest.raises(ValueError, match=re.escape(message)):
            function(k, n, selection)


# ---- the exact gain E[S] ----------------------------------------------------------------------

@pytest.mark.parametrize("k,n,selection,exact", [
    # every row kept: S ~ chi^2_n
    (1, 1, "magnitude", 1.0), (7, 7, "negative", 7.0),
    # max(|Z1|, |Z2|)^2: in polar coordinates r^2 max(cos^2, sin^2), E r^2 = 2 and the mean of
    # cos^2 a over a in [0, pi/4] is 1/2 + 1/pi
    (1, 2, "magnitude", 1 + 2 / math.pi),
    # min(Z1, Z2)^2 + max(Z1, Z2)^2 = Z1^2 + Z2^2 and min^2, max^2 have one law (Z -> -Z): 1 each
    (1, 2, "negative", 1.0),
    # the second moment of the extreme of three normals, 1 + sqrt(3) / (2 pi) (a classical
    # order-statistics value; a 2e6-draw Monte Carlo gives 1.2753 +- 0.0011 for 1.2757)
    (1, 3, "negative", 1 + math.sqrt(3) / (2 * math.pi)),
    # the two smallest of three: the total 3 minus the largest's square
    (2, 3, "negative", 2 - math.sqrt(3) / (2 * math.pi)),
])
def test_expected_squared_gain_matches_closed_forms(k, n, selection, exact):
    # quadrature to ~1e-13 relative; 1e-12 leaves a margin of ten
    assert expected_squared_gain(k, n, selection) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize("k,n", [(1, 7), (3, 10), (20, 500), (480, 500), (3000, 100000)])
def test_negative_selection_reflection_identity(k, n):
    """The n - k largest of n normals have the law of the n - k most negative (Z -> -Z), and the
    k most negative and the n - k largest together are all n: E[S](k) + E[S](n - k) = n exactly.
    Two independent quadratures of different integrands; 1e-12 relative (each is ~1e-13)."""
    total = expected_squared_gain(k, n, "negative") + expected_squared_gain(n - k, n, "negative")
    assert total == pytest.approx(n, rel=1e-12)


def _high_precision_gain(k, n, selection):
    """The order-statistic integral in mpmath at 20 digits, with the binomial CDF as an explicit sum
    (no scipy) and the normal tail from erfc: a check of the quadrature's accuracy."""
    def binomial_cdf(p):
        return mpmath.fsum(mpmath.binomial(n - 1, j) * p ** j * (1 - p) ** (n - 1 - j) for j in range(k))
    with mpmath.workdps(20):
        if selection == "magnitude":
            def integrand(z):
                return z * z * 2 * mpmath.npdf(z) * binomial_cdf(mpmath.erfc(z / mpmath.sqrt(2)))
            points = [0, 0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, mpmath.inf]
        else:
            def integrand(y):
                return y * y * mpmath.npdf(y) * binomial_cdf(mpmath.ncdf(y))
            points = [-mpmath.inf, -6, -5, -4, -3, -2.5, -2, -1.5, -1, -0.5, 0, 1, 2, mpmath.inf]
        return float(n * mpmath.quad(integrand, points))


@pytest.mark.parametrize("selection", SELECTIONS)
def test_quadrature_is_accurate_to_1e_11(selection):
    # measured agreement 5e-17 (k, n = 4, 100: the binomial switch is sharp, 0.04 wide in u);
    # the brief asks for ~1e-10, 1e-11 is asserted
    assert expected_squared_gain(4, 100, selection) == pytest.approx(_high_precision_gain(4, 100, selection),
                                                                     rel=1e-11)


def test_gain_against_brute_force_selection():
    """The definition literally: 1e5 draws of 500 normals, sum the squares of the 20 kept.

    Within 4 standard errors (a 6e-5 chance of a false alarm per selection if the formula is
    right). Measured with this seed: magnitude 118.540 +- 0.035 vs 118.6314 (-2.6 standard errors),
    negative 94.612 +- 0.034 vs 94.6584 (-1.4). Drawn in float32 for speed; no float32 bias: four
    other seeds with 2e5 draws each gave +0.00 to +0.44 standard errors (magnitude).
    """
    rng = np.random.default_rng(20250815)
    draws, chunk = 100_000, 25_000
    sums = {selection: [] for selection in SELECTIONS}
    for _ in range(draws // chunk):
        y = rng.standard_normal((chunk, N), dtype=np.float32)
        largest = np.partition(y * y, N - K, axis=1)[:, N - K:]
        most_negative = np.partition(y, K - 1, axis=1)[:, :K]
        sums["magnitude"].append(largest.sum(axis=1, dtype=np.float64))
        sums["negative"].append((most_negative.astype(np.float64) ** 2).sum(axis=1))
    for selection in SELECTIONS:
        s = np.concatenate(sums[selection])
        assert _within_standard_errors(s.mean(), s.std(ddof=1) / math.sqrt(s.size),
                                       expected_squared_gain(K, N, selection)), selection


def test_gain_against_one_million_exact_samples_of_the_selected_tail():
    """10^6 draws of the selected values without drawing the other 480 (Renyi's representation):
    the k smallest of n uniforms are Gamma_j / Gamma_{n+1}, j = 1..k, Gamma_j the partial sums of
    iid exponentials and Gamma_{n+1} = Gamma_k + Gamma(n + 1 - k). Mapped through the normal
    quantile they are the k smallest P(|Z| > z) (magnitude) or Phi(y) (negative).

    Within 4 standard errors (0.011 for both: ~1e-4 relative). Measured: 118.6288 and 94.6558 vs
    118.6314 and 94.6584 (-0.23 and -0.24 standard errors).
    """
    rng = np.random.default_rng(86)
    draws, chunk = 1_000_000, 250_000
    sums = {selection: [] for selection in SELECTIONS}
    for _ in range(draws // chunk):
        partial_sums = np.cumsum(rng.standard_exponential((chunk, K)), axis=1)
        total = partial_sums[:, -1] + rng.standard_gamma(N + 1 - K, chunk)
        smallest_uniforms = partial_sums / total[:, None]
        magnitudes = special.ndtri(smallest_uniforms / 2)   # -|z|: P(|Z| > |z|) = u
        values = special.ndtri(smallest_uniforms)           # y:    Phi(y) = u
        sums["magnitude"].append(np.einsum("ij,ij->i", magnitudes, magnitudes))
        sums["negative"].append(np.einsum("ij,ij->i", values, values))
    for selection in SELECTIONS:
        s = np.concatenate(sums[selection])
        assert _within_standard_errors(s.mean(), s.std(ddof=1) / math.sqrt(s.size),
                                       expected_squared_gain(K, N, selection)), selection


# ---- the large-n form ---------------------------------------------------------------------------

@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("q", [0.04, 0.25])
def test_asymptotic_gain_converges_like_one_over_n(selection, q):
    """At fixed q = k / n the relative error of the closed form falls like 1/n.

    Measured n x (relative error) at n = 1e2 .. 1e5: 3.37 -> 3.409 (magnitude, q = 0.04), 0.723 ->
    0.724 (0.25), 4.07 -> 4.087 and 0.856 -> 0.857 (negative): the log-log slope is -1 within 0.01;
    0.02 is asserted, and each tenfold n must cut the error at least eightfold.
    """
    ns = np.array([100, 1000, 10_000, 100_000])
    errors = np.array([abs(asymptotic_squared_gain(round(q * n), n, selection)
                           / expected_squared_gain(round(q * n), n, selection) - 1) for n in ns])
    assert np.all(errors[1:] < errors[:-1] / 8)
    assert np.polyfit(np.log(ns), np.log(errors), 1)[0] == pytest.approx(-1.0, abs=0.02)


def test_asymptotic_gain_is_the_normal_tail_moment():
    """n E[Z^2; Z in the selected tail], the tail moment evaluated by scipy's truncated normal."""
    q = K / N
    t_magnitude, t_negative = stats.norm.isf(q / 2), stats.norm.ppf(q)
    # E[Z^2 | |Z| > t] = E[Z^2 | Z > t] (symmetry) = var + mean^2 of the truncated normal
    upper = stats.truncnorm(t_magnitude, np.inf)
    lower = stats.truncnorm(-np.inf, t_negative)
    assert asymptotic_squared_gain(K, N, "magnitude") == pytest.approx(
        N * q * (upper.var() + upper.mean() ** 2), rel=1e-10)
    assert asymptotic_squared_gain(K, N, "negative") == pytest.approx(
        N * q * (lower.var() + lower.mean() ** 2), rel=1e-10)


# ---- the collapse, on chains built in NumPy -------------------------------------------------------

def _build_chains(selection, chains, layers, initial_tan2, rng, batch=500):
    """Chains as the paper builds them, with the training input u = e_1 and a test input v at
    angle atan(sqrt(initial_tan2)) to it. Returns |x_l|^2, and par_l^2, perp_l^2: the squared
    components of H_l v along and across x_l = H_l u, for l = 0..layers (chains x (layers + 1))."""
    u = np.zeros(K)
    u[0] = 1.0
    v = u.copy()
    v[1] = math.sqrt(initial_tan2)
    norm2, par2, perp2 = (np.empty((chains, layers + 1)) for _ in range(3))
    for start in range(0, chains, batch):
        rows = slice(start, start + batch)
        x, h = np.tile(u, (batch, 1)), np.tile(v, (batch, 1))
        for layer in range(layers + 1):
            if layer:
                R = rng.standard_normal((batch, N, K), dtype=np.float32)
                y = np.matmul(R, x.astype(np.float32)[:, :, None])[:, :, 0]   # only to rank the rows
                key = -np.abs(y) if selection == "magnitude" else y
                kept = np.argpartition(key, K - 1, axis=1)[:, :K]
                W = np.take_along_axis(R, kept[:, :, None], axis=1).astype(np.float64)
                x, h = np.einsum("cij,cj->ci", W, x), np.einsum("cij,cj->ci", W, h)
            direction = x / np.linalg.norm(x, axis=1, keepdims=True)
            along = np.einsum("ci,ci->c", h, direction)
            across = h - along[:, None] * direction   # not |h|^2 - along^2: no cancellation at small angles
            norm2[rows, layer] = np.einsum("ci,ci->c", x, x)
            par2[rows, layer] = along ** 2
            perp2[rows, layer] = np.einsum("ci,ci->c", across, across)
    return norm2, par2, perp2


def _ratio_of_means(numerator, denominator):
    """mean(numerator) / mean(denominator) and its standard error (delta method)."""
    ratio = numerator.mean() / denominator.mean()
    covariance = np.cov(numerator, denominator)
    variance = covariance[0, 0] - 2 * ratio * covariance[0, 1] + ratio ** 2 * covariance[1, 1]
    return ratio, math.sqrt(variance / numerator.size) / denominator.mean()


@pytest.fixture(scope="module", params=SELECTIONS)
def chains(request):
    # 2000 chains x 4 layers (~1.5 s per selection); tan^2 of the input angle 1 (45 degrees)
    selection = request.param
    rng = np.random.default_rng({"magnitude": 11, "negative": 12}[selection])
    return selection, 1.0, _build_chains(selection, 2000, 4, 1.0, rng)


def test_squared_norm_grows_by_the_expected_gain_per_layer(chains):
    """E|x_L|^2 = E[S]^L exactly (|x_0| = 1, S_l iid): within 4 standard errors at every L.
    Measured: relative standard error 0.2 % (L = 1) to 0.5 % (L = 4); deviations -0.9 to +0.3
    standard errors."""
    selection, _, (norm2, _, _) = chains
    gain = expected_squared_gain(K, N, selection)
    for layer in range(1, norm2.shape[1]):
        values = norm2[:, layer]
        assert _within_standard_errors(values.mean(), values.std(ddof=1) / math.sqrt(values.size),
                                       gain ** layer), layer


def test_ratio_of_expectations_follows_the_exact_recursion(chains):
    """What the formula predicts: r_l = E|perp_l|^2 / E|par_l|^2 (numerator and denominator
    averaged over chains separately), r_l = (k-1) r_{l-1} / (E[S] + r_{l-1}) -> collapse_factor per
    layer. Within 4 standard errors (0.9 % at l = 1 to 1.7 % at l = 4, delta method) at each layer;
    measured: +0.14 to +0.81 standard errors (and -1.1 to +2.2 with 4000 other chains and 5 layers).
    Over four layers r falls from 1 to 6.5e-4 (magnitude) and 1.6e-3 (negative): cos(H_4 u, H_4 v)
    = 0.9997 and 0.9992, from cos = 0.707 at the input.
    """
    selection, initial_tan2, (_, par2, perp2) = chains
    predicted = perpendicular_to_parallel_ratios(K, N, selection, initial_tan2, par2.shape[1] - 1)
    for layer in range(1, par2.shape[1]):
        ratio, standard_error = _ratio_of_means(perp2[:, layer], par2[:, layer])
        assert _within_standard_errors(ratio, standard_error, predicted[layer]), layer
    # the recursion's per-layer factor approaches collapse_factor, its small-angle limit: by l = 4
    # within 3e-5 (magnitude) and 8e-5 (negative) relative; 2e-4 asserted
    assert predicted[-1] / predicted[-2] == pytest.approx(collapse_factor(K, N, selection), rel=2e-4)


def test_median_single_chain_shrink_is_chi_square_median_times_collapse_factor(chains):
    """One chain's factor tan^2 theta_l / tan^2 theta_{l-1} is chi^2_{k-1} / (sqrt(S) + tan theta g)^2,
    ~ chi^2_{k-1} / S at small angles: its median is not (k-1) / E[S] but about
    median(chi^2_{k-1}) / E[S] = 0.965 collapse_factor (k = 20; S fluctuates by only 9-11 %).

    Measured, pooled over l = 2..4 (6000 factors): 0.966 (magnitude), 0.974 (negative) of
    collapse_factor (0.969 and 0.974 with 4000 other chains); the median's standard error is
    ~0.6 %, so 0.02 is asserted (~3 standard errors plus the ~1 % the fluctuations of S shift it).
    The mean of the factor sits above collapse_factor instead (1.009 and 1.017: E[1/S] > 1/E[S]),
    the geometric mean below (0.950 and 0.958): neither is asserted.
    """
    selection, _, (_, par2, perp2) = chains
    tan2 = perp2 / par2
    shrink = (tan2[:, 2:] / tan2[:, 1:-1]).ravel()
    reference = stats.chi2.median(K - 1) / (K - 1)
    assert np.median(shrink) / collapse_factor(K, N, selection) == pytest.approx(reference, abs=0.02)


def test_collapse_factor_values():
    # (k - 1) / E[S] for the paper's (20, 500): 19 / 118.6314 and 19 / 94.6584 (the exact gains above)
    assert collapse_factor(K, N, "magnitude") == pytest.approx(19 / expected_squared_gain(K, N, "magnitude"),
                                                               rel=1e-15)
    assert collapse_factor(K, N, "magnitude") == pytest.approx(0.16016, abs=1e-5)
    assert collapse_factor(K, N, "negative") == pytest.approx(0.20072, abs=1e-5)


# ---- the maximum-likelihood reading ---------------------------------------------------------------

def test_selection_mle_symbolic_facts():
    mle = selection_likelihood()
    k, n = mle.k, mle.n
    assert sympy.simplify(mle.theta_star - k / n) == 0
    # the score vanishes there, and the curvature n^3 / (k (k - n)) is negative for 0 < k < n
    assert sympy.simplify(mle.stationarity.lhs.subs(mle.theta, mle.theta_star)) == 0
    spare = sympy.Symbol("m", positive=True)   # n - k > 0
    assert sympy.simplify(mle.second_derivative.subs(n, k + spare)).is_negative is True
    assert sympy.simplify(mle.second_derivative - n ** 3 / (k * (k - n))) == 0
    # per-row -log2 L(theta*) = H2(k/n): the simplified difference is 0
    assert mle.entropy_difference == 0


def test_selection_mle_numeric_entropy():
    """At (k, n) = (20, 500): H2(0.04) = 0.2422921890824..., computed here with math.log2;
    1e-14 relative (SymPy evaluates to 30 digits, math.log2 to ~1e-16)."""
    mle = selection_likelihood()
    q = K / N
    entropy = -q * math.log2(q) - (1 - q) * math.log2(1 - q)
    per_row = float(mle.per_row_neg_log2_likelihood.subs({mle.k: K, mle.n: N}).evalf(30))
    assert per_row == pytest.approx(entropy, rel=1e-14)
    assert per_row == pytest.approx(0.24229218908, abs=1e-11)
    # and directly: -(1/n) log2 of the likelihood of one pattern of k kept rows, at theta = k/n
    assert -(K * math.log2(q) + (N - K) * math.log2(1 - q)) / N == pytest.approx(entropy, rel=1e-14)


def test_dynsim_derive_selection_mle_prints_the_entropy_form(capsys):
    from dynsim.cli import main
    from dynsim.theory import derive

    assert main(["derive", "--quantity", "selection_mle"]) == 0   # no --activation needed
    latex = capsys.readouterr().out
    assert r"\theta^{*} = \frac{k}{n}" in latex
    assert r"= H_{2}{\left(\frac{k}{n} \right)}" in latex
    assert r"H_{2}{\left(q \right)} = - \frac{q \log{\left(q \right)}}{\log{\left(2 \right)}}" in latex
    assert derive("selection_mle").architecture is None
