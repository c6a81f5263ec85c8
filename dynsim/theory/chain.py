"""The max-norm chain of the wormhole paper (Lai & Jin 2025; ../shared/papers/companions.md, A):
exact gain per layer, the collapse of the output directions, and the maximum-likelihood reading.

The chain: linear, bias-free layers of width k and one training input x_0. Layer l draws R_l, an
n x k matrix of iid N(0, 1) entries (n >> k candidate rows), computes y = R_l x_{l-1} and keeps
k rows as W_l: the k rows with the largest |y_i| (selection "magnitude") or the k most negative
y_i (selection "negative"). Then x_l = W_l x_{l-1} holds the selected y_i.

Two facts of the Gaussian rows carry everything below:

* y_i / |x_{l-1}| are iid N(0, 1) whatever x_{l-1} is, so |x_l|^2 / |x_{l-1}|^2 = S, the sum of
  squares of the k selected of n iid standard normals; the S_l of different layers are iid.
* Each row splits into its component along x_{l-1} (which alone decides the selection) and its
  component perpendicular to x_{l-1}, which is independent of the selection: the selected rows'
  perpendicular parts are iid N(0, I - x^ x^T).

**Gain.** E[S] is exact from order statistics: a given candidate is selected iff at most k - 1 of
the other n - 1 beat it, so

    magnitude: E[S] = n int_0^inf z^2 2 phi(z) P(Binomial(n - 1, 2 (1 - Phi(z))) <= k - 1) dz
    negative:  E[S] = n int y^2 phi(y) P(Binomial(n - 1, Phi(y)) <= k - 1) dy

(``expected_squared_gain``), and E|x_L|^2 = E[S]^L |x_0|^2 exactly. For n -> oo at fixed
q = k / n the selected values are the normal tail beyond the q-quantile, which gives
(``asymptotic_squared_gain``)

    magnitude: E[S] ~ n (q + 2 t phi(t)),  t = Phi^-1(1 - q/2)   (E[Z^2; |Z| > t] = q + 2 t phi(t))
    negative:  E[S] ~ n (q - t phi(t)),    t = Phi^-1(q) < 0     (E[Z^2; Z < t] = Phi(t) - t phi(t)).

**Collapse.** Take any other input v and write H_{l-1} v = a x^_{l-1} + b (b perpendicular to
x_{l-1}, tan theta_{l-1} = |b| / |a|). Through layer l the parallel part becomes a sqrt(S) x^_l;
W_l b is an isotropic N(0, |b|^2 I_k) vector independent of x_l: a component |b| g along x^_l
(g ~ N(0, 1)) and a squared length |b|^2 chi^2_{k-1} across it. Hence
par_l = a sqrt(S) + |b| g, |perp_l|^2 = |b|^2 chi^2_{k-1}, and, exactly, for the expectations
over the layer,

    E|perp_l|^2 = (k - 1) |b|^2,    E|par_l|^2 = E[S] a^2 + |b|^2,

so that, over chains from a fixed pair (u, v), the ratio of expectations
r_l = E|perp_l|^2 / E|par_l|^2 obeys r_l = (k - 1) r_{l-1} / (E[S] + r_{l-1})
(``perpendicular_to_parallel_ratios``) and shrinks per layer by ``collapse_factor`` =
(k - 1) / E[S] once r is small. For (k, n) = (20, 500) that is 19 / 118.63 = 0.160 per layer:
cos(H_L u, H_L v) -> +-1, the collapse the paper reports. This is a statement on a ratio of
expectations; a single chain's per-layer factor tan^2 theta_l / tan^2 theta_{l-1} is
chi^2_{k-1} / (sqrt(S) + tan theta_{l-1} g)^2 (g ~ N(0, 1)), about chi^2_{k-1} / S at small
angles: its median is about median(chi^2_{k-1}) / (k - 1) = 0.965 of (k - 1) / E[S] for k = 20
and its mean 1-2 % above (E[1/S] > 1 / E[S]); measured in tests/test_theory_chain.py.

**Maximum likelihood.** The paper reads each candidate row as selected or not with probability
theta; k selections out of n give log L = k log theta + (n - k) log(1 - theta), maximal at
theta* = k / n, where the per-row negative log2 likelihood is the binary entropy H2(k / n)
(``selection_likelihood``, in SymPy; ``dynsim derive --quantity selection_mle``).

No simple exact form is known to us for E[log S] (what sets the typical, rather than the mean,
norm growth log|x_L| - log|x_0| = (1/2) sum_l log S_l); Jensen bounds it by log E[S].
"""
import dataclasses
import math

import numpy as np
import sympy
from scipy import integrate, special

SELECTIONS = ("magnitude", "negative")

# |Z| beyond this carries phi(z) < 1e-300: the integrals are cut there without loss
_NORMAL_CUTOFF = 38.0
# breakpoints of the quadrature at the binomial's switch from 1 to 0, in standard deviations of
# the selection fraction around k / n (the integrand changes shape there)
_SWITCH_OFFSETS = (-12.0, -6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 12.0)


def _check_arguments(k: int, n: int, selection: str) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k (rows kept per layer) must be an integer, got {k!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n (candidate rows per layer) must be an integer, got {n!r}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n (keep k of n candidate rows), got k={k}, n={n}: "
                         "choose k between 1 and n")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")


def _normal_density(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _selection_fraction_points(k: int, n: int) -> np.ndarray:
    """Fractions u in (0, 1) around k / n where P(Binomial(n - 1, u) <= k - 1) falls from 1 to 0."""
    centre = k / n
    spread = math.sqrt(max(centre * (1 - centre), 1.0 / n) / n)
    u = centre + spread * np.asarray(_SWITCH_OFFSETS)
    return np.unique(u[(u > 0) & (u < 1)])


def expected_squared_gain(k: int, n: int, selection: str) -> float:
    """E[S], S = |x_l|^2 / |x_{l-1}|^2: the sum of squares of the k selected of n iid N(0, 1).

    Exact (quadrature of the order-statistic integral, relative accuracy ~1e-12). k = n gives n.
    """
    _check_arguments(k, n, selection)
    k, n = int(k), int(n)
    if k == n:  # every row kept: S is chi^2_n
        return float(n)
    # quadrature tolerance: relative 1e-12 of the whole, not of each piece (pieces far in the
    # tails are ~1e-300 and cannot be resolved relative to themselves)
    tolerance = 1e-14 * asymptotic_squared_gain(k, n, selection) / n
    if selection == "magnitude":
        def integrand(z):  # z = |y|; another row beats it with probability P(|Z| > z) = 2 Phi(-z)
            return z * z * 2.0 * _normal_density(z) * special.bdtr(k - 1, n - 1, 2.0 * special.ndtr(-z))
        # the fraction u = P(|Z| > z) of rows beating z, mapped to z
        points = special.ndtri(1.0 - _selection_fraction_points(k, n) / 2.0)
        lower, upper = 0.0, _NORMAL_CUTOFF
    else:
        def integrand(y):  # another row beats it (is more negative) with probability Phi(y)
            return y * y * _normal_density(y) * special.bdtr(k - 1, n - 1, special.ndtr(y))
        points = special.ndtri(_selection_fraction_points(k, n))
        lower, upper = -_NORMAL_CUTOFF, _NORMAL_CUTOFF
    edges = np.unique(np.concatenate(([lower], points[(points > lower) & (points < upper)], [upper])))
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        value, _ = integrate.quad(integrand, a, b, epsabs=tolerance, epsrel=1e-13, limit=200)
        total += value
    return n * total


def asymptotic_squared_gain(k: int, n: int, selection: str) -> float:
    """The n -> oo, fixed q = k / n form of E[S]: n times the second moment of the selected tail.

    magnitude: n (q + 2 t phi(t)), t = Phi^-1(1 - q/2); negative: n (q - t phi(t)), t = Phi^-1(q).
    Its relative error against ``expected_squared_gain`` falls like 1/n at fixed q.
    """
    _check_arguments(k, n, selection)
    q = k / n
    if k == n:  # the whole distribution: E[Z^2] = 1 (and t is infinite for "negative")
        return float(n)
    if selection == "magnitude":
        t = -special.ndtri(q / 2.0)  # Phi^-1(1 - q/2) without the cancellation in 1 - q/2
        return float(n * (q + 2.0 * t * _normal_density(t)))
    t = special.ndtri(q)
    return float(n * (q - t * _normal_density(t)))


def collapse_factor(k: int, n: int, selection: str) -> float:
    """(k - 1) / E[S]: the per-layer shrink of tan^2 of the angle between H_l u and H_l v.

    Precisely: the small-angle limit of r_l / r_{l-1}, r_l = E|perp_l|^2 / E|par_l|^2 over chains
    (see ``perpendicular_to_parallel_ratios`` for the exact recursion). Below 1 the outputs of all
    inputs align with the training input's: cos(H_L u, H_L v) -> +-1.
    """
    return (k - 1) / expected_squared_gain(k, n, selection)


def perpendicular_to_parallel_ratios(k: int, n: int, selection: str, initial_ratio: float,
                                     layers: int) -> np.ndarray:
    """r_0 .. r_layers, r_l = E|perp_l|^2 / E|par_l|^2 over chains from a fixed input pair (u, v).

    par_l / perp_l: the components of H_l v along and across H_l u; r_0 = tan^2 of the input angle.
    Exact: E|perp_l|^2 = (k - 1) E|perp_{l-1}|^2 and E|par_l|^2 = E[S] E|par_{l-1}|^2 +
    E|perp_{l-1}|^2, so r_l = (k - 1) r_{l-1} / (E[S] + r_{l-1}).
    """
    if not initial_ratio >= 0:
        raise ValueError(f"initial_ratio (tan^2 of the input angle) must be >= 0, got {initial_ratio!r}")
    if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or layers < 0:
        raise ValueError(f"layers must be an integer >= 0, got {layers!r}")
    gain = expected_squared_gain(k, n, selection)
    ratios = [float(initial_ratio)]
    for _ in range(int(layers)):
        ratios.append((k - 1) * ratios[-1] / (gain + ratios[-1]))
    return np.array(ratios)


@dataclasses.dataclass(frozen=True)
class SelectionMLE:
    """The maximum-likelihood reading of the selection, in SymPy (``selection_likelihood``)."""
    theta: sympy.Symbol              # selection probability of one candidate row
    n: sympy.Symbol                  # candidate rows
    k: sympy.Symbol                  # selected rows
    q: sympy.Symbol                  # k / n, the argument of the entropy
    log_likelihood: sympy.Expr       # k log theta + (n - k) log(1 - theta)
    stationarity: sympy.Eq           # d log L / d theta = 0
    theta_star: sympy.Expr           # its solution, k / n
    second_derivative: sympy.Expr    # d^2 log L / d theta^2 at theta*: -n^3 / (k (n - k)) < 0
    per_row_neg_log2_likelihood: sympy.Expr  # -(1/n) log2 L(theta*), in k and n
    binary_entropy: sympy.Expr       # H2(q) = -q log2 q - (1 - q) log2(1 - q)
    entropy_difference: sympy.Expr   # simplify(per-row -log2 L - H2(k/n)): 0 is the proof

    def equations(self) -> tuple[sympy.Eq, ...]:
        """Likelihood, stationarity, theta*, the maximum's curvature, and -log2 L(theta*) / n = H2(k / n)."""
        log_L = sympy.log(sympy.Function("L")(self.theta))
        theta_star = sympy.Symbol("theta^*")
        per_row = -log_L.subs(self.theta, theta_star) / (self.n * sympy.log(2))  # -log2 L(theta*) / n
        H2 = sympy.Function("H_2")
        return (sympy.Eq(log_L, self.log_likelihood),
                self.stationarity,
                sympy.Eq(theta_star, self.theta_star),
                sympy.Eq(sympy.Subs(sympy.Derivative(log_L, self.theta, 2), self.theta, theta_star),
                         self.second_derivative),
                sympy.Eq(per_row, self.per_row_neg_log2_likelihood),
                sympy.Eq(per_row, H2(self.k / self.n)),
                sympy.Eq(H2(self.q), self.binary_entropy))


def selection_likelihood() -> SelectionMLE:
    """Each of n candidate rows selected with probability theta, k selected: the MLE is k / n and
    the per-row negative log2 likelihood there is the binary entropy H2(k / n)."""
    theta = sympy.Symbol("theta", positive=True)
    n, k, q = sympy.symbols("n k q", positive=True)
    log_likelihood = k * sympy.log(theta) + (n - k) * sympy.log(1 - theta)
    score = sympy.diff(log_likelihood, theta)
    solutions = sympy.solve(score, theta)
    if len(solutions) != 1:
        raise ArithmeticError(f"expected one stationary point of the selection likelihood, got {solutions}")
    theta_star = sympy.simplify(solutions[0])
    second = sympy.factor(sympy.simplify(sympy.diff(log_likelihood, theta, 2).subs(theta, theta_star)))

    def log2(x):
        return sympy.log(x) / sympy.log(2)
    per_row = -(k * log2(theta_star) + (n - k) * log2(1 - theta_star)) / n
    entropy = -q * log2(q) - (1 - q) * log2(1 - q)
    difference = sympy.simplify(per_row - entropy.subs(q, k / n))
    return SelectionMLE(theta, n, k, q, log_likelihood, sympy.Eq(score, 0), theta_star, second, per_row, entropy,
                        difference)
