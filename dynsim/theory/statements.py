"""The analytic statements about the training response that can be written down for the simple net.

The simple-network paper (Nakazato, arXiv 2405.04074) says the response is made of different
factors depending on the activation, the training stage and GD vs SGD; its equations could not be
read (see /work/shared/papers/nakazato.md), so what follows are *our* derivations, as defined in
dynsim, each checked numerically in tests/test_theory*.py:

1. ``second_order_parity``: activation dependence beyond the kernel. The eta^2 term of the
   one-step response is odd in the output weights, so it averages to zero at initialisation and
   is O(N^-1) with NTK scaling; for activations with sigma'' = 0 (linear, relu off the kink) only
   the cross term between a and (w, b) survives.
2. ``response_factorisation``: training stage, lazy regime. With a constant kernel the response
   factorises into an amplitude that ages and a fixed shape set by the activation through Theta.
3. ``amplitude_law``: training stage, late times. With a constant kernel the amplitude decays
   exponentially for squared loss on a linear output, and as a power of t once the loss feedback
   saturates (cross-entropy, or a sigmoid output): exponents from the loss and output alone.
4. ``sgd_lazy_moments``: GD vs SGD in the lazy regime. SGD with batches drawn with replacement
   has the GD trajectory as its mean; its second moment obeys a closed linear recursion.
"""
import dataclasses
import functools

import numpy as np
import sympy

from . import symbolic as sym
from .network import SIGMA, Architecture, derive_generic_unit, derive_unit, prime_notation


@dataclasses.dataclass(frozen=True)
class Statement:
    name: str
    claim: str
    equations: tuple[sympy.Eq, ...]


# 1. --------------------------------------------------------------------------------------------

def second_order_parity(activation: str | None = None, hidden_bias: bool = True) -> Statement:
    """R_2 per unit changes sign with a: zero mean at init, O(N^-1) with NTK scaling."""
    unit = derive_unit(Architecture(activation, hidden_bias=hidden_bias)) if activation else \
        derive_generic_unit(hidden_bias)
    r2 = unit.response_second
    odd = sympy.simplify(r2.subs(sym.a, -sym.a) + r2) == 0
    if not odd:
        raise RuntimeError(f"R_2 of {activation or 'sigma'} is not odd in a: {r2}")
    # The part that survives when sigma'' = 0: drop sigma'' from the generic form.
    generic = derive_generic_unit(hidden_bias).response_second
    second_derivative = sympy.Derivative(SIGMA(sym.u), (sym.u, 2))
    cross = sympy.factor_terms(generic.subs(second_derivative, 0))
    claim = ("The eta^2 coefficient of one unit's response is odd in its output weight a, so with "
             "a ~ N(0, sigma_a^2) independent of (w, b) its expectation at initialisation is zero; with "
             "NTK scaling (s = N^-1/2) the sum over N units of zero-mean terms of size s^3 is O(N^-1), "
             "while the first-order term stays O(1): the response becomes linear in eta as N grows. "
             "For sigma'' = 0 only the a-(w, b) cross term is left.")
    shown = r2 if activation else prime_notation(r2)
    return Statement("second_order_parity", claim,
                     (sympy.Eq(sympy.Symbol("R_2"), shown),
                      sympy.Eq(shown.subs(sym.a, -sym.a), -shown, evaluate=False),
                      sympy.Eq(sympy.Symbol("R_2^cross"), prime_notation(cross))))


# 2. --------------------------------------------------------------------------------------------

def response_factorisation() -> Statement:
    """R_t(x; x_s) = A_t(x_s) K(x, x_s) when Theta_t = Theta_0."""
    R, A, K, Theta = (sympy.Function(n) for n in ("R_t", "A_t", "K", "Theta_0"))
    x, xs = sympy.symbols("x x_s")
    l_prime = sympy.Function("l'")(sympy.Function("f_t")(xs), sympy.Symbol("y_s"))
    claim = ("In the lazy regime (Theta_t = Theta_0) the one-step response factorises: an amplitude "
             "A_t(x_s) = -eta l'(f_t(x_s), y_s) Theta_0(x_s, x_s) that changes with the training stage "
             "(through the residual alone), times a normalised kernel K(x, x_s) = Theta_0(x, x_s) / "
             "Theta_0(x_s, x_s) that does not. The kernel's shape is where the activation enters: at "
             "infinite width Theta_0 = sigma_a^2 (x.x' + 1) Kdot + K with the Gaussian expectations of "
             "kernels.gaussian_kernels. A drifting K (departure from the lazy regime) is what the "
             "factorisation check of the aging analysis measures.")
    return Statement("response_factorisation", claim,
                     (sympy.Eq(R(x, xs), A(xs) * K(x, xs)),
                      sympy.Eq(A(xs), -sym.eta * l_prime * Theta(xs, xs)),
                      sympy.Eq(K(x, xs), Theta(x, xs) / Theta(xs, xs))))


# 3. --------------------------------------------------------------------------------------------

OUTPUTS = ("identity", "sigmoid")
QUANTITIES = ("loss_derivative", "error", "output_derivative", "output_kernel")


@dataclasses.dataclass(frozen=True)
class AmplitudeLaw:
    """How the response amplitude and related quantities decay under a constant kernel.

    One output with logit z, output o(z), target y = 1, gradient flow dz/dtau = -K dl/dz
    (tau = eta t, the kernel K constant). ``kind`` "exponential": every quantity decays like
    exp(-K tau) (``rate`` K); "power": quantity Q ~ tau^exponents[Q] as tau -> oo.
    Quantities: loss_derivative |dl/dz| (the response amplitude), error |y - p| (p = o(z) for
    squared loss, the probability sigmoid(z) for cross-entropy), output_derivative o'(z),
    output_kernel o'(z)^2 K (the tangent kernel of the output o).
    """

    loss: str
    output: str
    kind: str
    exponents: dict
    rate: sympy.Expr | None
    flow: sympy.Eq           # the ODE
    solution: sympy.Eq       # its (asymptotic) solution
    leading: sympy.Expr      # the leading large-z form of -dl/dz: C exp(-m z) (power) or the exact one


_zs = sympy.Symbol("z", real=True)
# the losses of the amplitude law, applied to an output o(z) (the simulator's sigmoid_squared is
# "squared" on the "sigmoid" output here)
AMPLITUDE_LOSSES = ("squared", "cross_entropy")
_K = sympy.Symbol("K", positive=True)
_tau = sympy.Symbol("tau", positive=True)
_z0 = sympy.Symbol("z_0", real=True)


def _loss_in_logit(loss: str, output: str):
    """(l(z), error(z), o(z)) for target y = 1."""
    if loss not in AMPLITUDE_LOSSES or output not in OUTPUTS:
        raise ValueError(f"loss must be one of {', '.join(AMPLITUDE_LOSSES)} and output one of "
                         f"{', '.join(OUTPUTS)}; got {loss!r}, {output!r}")
    sigmoid = sym.apply_activation("sigmoid", _zs)
    out = _zs if output == "identity" else sigmoid
    if loss == "squared":
        return sym.loss("squared").subs({sym.f_sym: out, sym.y_sym: 1}), 1 - out, out
    # Cross-entropy is defined on the logit (dynsim's loss); a sigmoid output is its probability.
    return sym.loss("cross_entropy").subs({sym.f_sym: _zs, sym.y_sym: 1}), 1 - sigmoid, out


def _decay_rate(expr: sympy.Expr) -> sympy.Expr:
    """k with expr ~ C exp(-k z) as z -> oo (0 for slower than exponential)."""
    return sympy.limit(-sympy.log(sympy.Abs(expr)) / _zs, _zs, sympy.oo)


@functools.lru_cache(maxsize=None)
def amplitude_law(loss: str, output: str = "identity") -> AmplitudeLaw:
    """Derive the late-time decay under a constant kernel (see ``AmplitudeLaw``)."""
    l_z, error, out = _loss_in_logit(loss, output)
    dl = sympy.diff(l_z, _zs)
    zf = sympy.Function("z")
    flow = sympy.Eq(zf(_tau).diff(_tau), -_K * dl.subs(_zs, zf(_tau)))
    quantities = dict(loss_derivative=dl, error=error, output_derivative=sympy.diff(out, _zs),
                      output_kernel=sympy.diff(out, _zs) ** 2 * _K)
    m = _decay_rate(dl)
    if m == 0:
        # Squared loss on a linear output: the flow is linear, dz/dtau = -K (z - 1).
        solution = sympy.dsolve(flow, zf(_tau), ics={zf(0): _z0})
        residual = sympy.simplify(1 - solution.rhs)
        rate = sympy.simplify(-sympy.diff(sympy.log(residual), _tau))
        return AmplitudeLaw(loss, output, "exponential", {}, rate, flow, solution, dl)
    prefactor = sympy.limit(sympy.exp(m * _zs) * sympy.Abs(dl), _zs, sympy.oo)
    leading = prefactor * sympy.exp(-m * _zs)
    asymptotic = sympy.Eq(zf(_tau).diff(_tau), _K * leading.subs(_zs, zf(_tau)))
    solution = sympy.dsolve(asymptotic, zf(_tau), ics={zf(0): _z0})
    exponents = {}
    for name, q_expr in quantities.items():
        k = _decay_rate(q_expr)
        # Q ~ exp(-k z(tau)): its log-log slope in tau at late times.
        exponents[name] = sympy.limit(_tau * sympy.diff(-k * solution.rhs, _tau), _tau, sympy.oo)
    return AmplitudeLaw(loss, output, "power", exponents, None, asymptotic, solution, leading)


def amplitude_statement(loss: str, output: str = "identity") -> Statement:
    law = amplitude_law(loss, output)
    if law.kind == "exponential":
        claim = (f"{loss} loss on the {output} output under a constant kernel: the residual, and with it the "
                 f"response amplitude, decays exponentially with rate {law.rate} (no aging without a "
                 "drifting kernel or a spread of eigenvalues).")
    else:
        parts = ", ".join(f"{name} ~ tau^({value})" for name, value in law.exponents.items())
        claim = (f"{loss} loss on the {output} output under a constant kernel: the loss feedback saturates "
                 f"(-dl/dz ~ {law.leading}), z grows like a logarithm and {parts}: power-law decay set by "
                 "the loss and the output nonlinearity alone.")
    return Statement(f"amplitude_{loss}_{output}", claim, (law.flow, law.solution))


# 4. --------------------------------------------------------------------------------------------

def sgd_moment_equations() -> Statement:
    """E r_{t+1} and E r r^T_{t+1} of linearised SGD (batch B drawn with replacement)."""
    P, B = sympy.symbols("P B", integer=True, positive=True)
    Theta, M_t, M_next = (sympy.MatrixSymbol(name, P, P) for name in ("Theta", "M_t", "M_{t+1}"))
    m_t, m_next = sympy.MatrixSymbol("m_t", P, 1), sympy.MatrixSymbol("m_{t+1}", P, 1)
    e = sym.eta
    diag = sympy.DiagMatrix(sympy.DiagonalOf(M_t))
    second = (M_t - e / P * (Theta * M_t + M_t * Theta)
              + e ** 2 / B * Theta * ((B - 1) / P ** 2 * M_t + diag / P) * Theta)
    claim = ("Linearised SGD, batch of B samples drawn with replacement: r_{t+1} = (I - (eta/B) Theta S_t) r_t "
             "with S_t = sum_b e_mu_b e_mu_b^T. E S = (B/P) I gives the GD recursion for the mean m_t = E r_t "
             "(so the mean SGD response equals the lazy GD response), and E S M S = B(B-1)/P^2 M + (B/P) "
             "diag(M) closes the recursion for M_t = E r r^T. The SGD spread of the response is "
             "Var R_t(x; x_s) = eta^2 Theta(x, x_s)^2 (M_t - m_t m_t^T)_ss. (Sampling without "
             "replacement correlates the batches of an epoch and is not covered.)")
    return Statement("sgd_lazy_moments", claim,
                     (sympy.Eq(m_next, (sympy.Identity(P) - e / P * Theta) * m_t, evaluate=False),
                      sympy.Eq(M_next, second, evaluate=False)))


def sgd_lazy_moments(ntk_train, residual0, eta_value: float, batch: int, steps) -> tuple[np.ndarray, np.ndarray]:
    """(m_t [T, P], M_t [T, P, P]) of the linearised SGD residual at ``steps`` (``sgd_moment_equations``)."""
    ntk = np.asarray(ntk_train, dtype=np.float64)
    n = ntk.shape[0]
    steps = np.asarray(steps, dtype=np.int64)
    mean = np.asarray(residual0, dtype=np.float64).copy()
    second = np.outer(mean, mean)
    drift = np.eye(n) - eta_value / n * ntk
    means, seconds = np.empty((len(steps), n)), np.empty((len(steps), n, n))
    t = 0
    for out, target in enumerate(steps):
        while t < target:
            noise = (batch - 1) / n ** 2 * second + np.diag(np.diag(second)) / n
            second = (second - eta_value / n * (ntk @ second + second @ ntk)
                      + eta_value ** 2 / batch * ntk @ noise @ ntk)
            mean = drift @ mean
            t += 1
        means[out], seconds[out] = mean, second
    return means, seconds


def all_statements(activation: str | None = None) -> tuple[Statement, ...]:
    """Every statement, for display (``dynsim derive --quantity statements``)."""
    out = [second_order_parity(activation), response_factorisation()]
    for loss in AMPLITUDE_LOSSES:
        for output in OUTPUTS:
            out.append(amplitude_statement(loss, output))
    out.append(sgd_moment_equations())
    return tuple(out)
