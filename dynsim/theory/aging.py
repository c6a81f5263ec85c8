"""Saturation-driven aging: late-time asymptotics of one saturating output, with the first correction.

One output with logit z, target 1, a constant kernel K for the logit and gradient flow in
tau = eta t:

    dz/dtau = K g(z),    g(z) = -dl/dz  (the loss feedback)

For a sigmoid output g decays exponentially in z, so z grows like a logarithm and every quantity
Q(z) decays like a power of tau, with exponents set by the loss and the output alone (DESIGN.md
section 4, ../papers/nakazato.md "an analytic aging mechanism"). Derived here exactly where
possible and asymptotically after that, in u = e^z:

* the flow separates: F(u) = integral du / (u g) = K tau + C exactly, with C = F(e^{z_0});
* F(u) ~ c u^m as u -> oo, so u ~ u_0 = (T / c)^(1/m), T = K tau + C;
* one Newton step on F(u) = T gives the first correction u_1 (a constant, or -log T for
  cross-entropy), u = u_0 + u_1 + o(u_1);
* each quantity Q(u) = A u^(-k) (1 + b / u + ...), so

      Q = A (T / c)^(-k / m) [1 - (k u_1 - b) / u_0 + ...]:

  exponent -k / m in tau, and a first correction of relative size (k u_1 - b) / u_0.

Quantities: the error 1 - p (p the output, or the sigmoid probability for cross-entropy), the
output derivative o'(z), the output-space kernel o'(z)^2 K (the tangent kernel of the output,
which is what the training response of the output carries), and the loss derivative |dl/dz|.
Exponents (error, o', output kernel, |dl/dz|): squared error on a sigmoid output -1/2, -1/2, -1,
-1; cross-entropy -1, -1, -2, -1. ``dynsim derive --quantity aging`` prints them with their first
corrections (relative T^(-1/2) for squared error, (log T) / T for cross-entropy).
"""
import dataclasses
import functools

import sympy

from . import symbolic as sym

LOSSES = ("squared", "cross_entropy")
OUTPUTS = ("sigmoid", "identity")
QUANTITY_NAMES = ("error", "output_derivative", "output_kernel", "loss_derivative")

u = sympy.Symbol("u", positive=True)          # e^z
T = sympy.Symbol("T", positive=True)          # K tau + C
tau = sympy.Symbol("tau", positive=True)
K = sympy.Symbol("K", positive=True)
z = sympy.Symbol("z", real=True)
z0 = sympy.Symbol("z_0", real=True)


@dataclasses.dataclass(frozen=True)
class QuantityAsymptotics:
    name: str
    exact: sympy.Expr          # Q as a function of u = e^z
    exponent: sympy.Expr       # Q ~ tau^exponent (0: tends to a constant)
    leading: sympy.Expr        # A (T / c)^(-k/m), a function of T = K tau + C
    correction: sympy.Expr     # the relative first correction: Q = leading * (1 + correction + ...)

    def expansion(self) -> sympy.Expr:
        return self.leading * (1 + self.correction)


@dataclasses.dataclass(frozen=True)
class AgingLaw:
    loss: str
    output: str
    flow: sympy.Eq             # dz/dtau = K g(z)
    integral: sympy.Eq         # F(e^z) = K tau + C, exact
    constant: sympy.Eq         # C = F(e^{z_0})
    m: sympy.Expr              # F ~ c u^m
    c: sympy.Expr
    logit: sympy.Eq            # z = log(u_0 + u_1): leading growth and first correction
    quantities: tuple[QuantityAsymptotics, ...]

    def quantity(self, name: str) -> QuantityAsymptotics:
        return next(q for q in self.quantities if q.name == name)

    @property
    def exponents(self) -> dict:
        return {q.name: q.exponent for q in self.quantities}

    def equations(self) -> tuple[sympy.Eq, ...]:
        out = [self.flow, self.integral, self.constant, self.logit]
        for q in self.quantities:
            out.append(sympy.Eq(sympy.Symbol(q.name), q.expansion()))
        return tuple(out)


def _in_u(expr: sympy.Expr) -> sympy.Expr:
    return sympy.simplify(expr.subs(z, sympy.log(u)))


def _logit_functions(loss: str, output: str):
    """(loss derivative dl/dz, error, output o(z)) for target 1, as functions of z."""
    if loss not in LOSSES or output not in OUTPUTS:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)} and output one of {', '.join(OUTPUTS)}; "
                         f"got {loss!r}, {output!r}")
    sigmoid = sym.apply_activation("sigmoid", z)
    out = sigmoid if output == "sigmoid" else z
    if loss == "squared":
        if output == "identity":
            raise ValueError("squared error on the identity output does not saturate: its residual decays "
                             "exponentially (see statements.amplitude_law); no power-law aging to expand")
        l_z = sym.loss("squared").subs({sym.f_sym: out, sym.y_sym: 1})
        error = 1 - out
    else:  # cross-entropy is defined on the logit; with a sigmoid output that is the output's own loss
        l_z = sym.loss("cross_entropy").subs({sym.f_sym: z, sym.y_sym: 1})
        error = 1 - sigmoid
    return sympy.diff(l_z, z), error, out


def _power_in_u(q: sympy.Expr):
    """(A, k, b) with q = A u^(-k) (1 + b / u + o(1/u)) as u -> oo."""
    k = -sympy.limit(sympy.log(q) / sympy.log(u), u, sympy.oo)
    amplitude = sympy.limit(q * u ** k, u, sympy.oo)
    b = sympy.limit(u * (q / (amplitude * u ** (-k)) - 1), u, sympy.oo)
    return amplitude, k, b


def _leading_growth(expr: sympy.Expr) -> sympy.Expr:
    """The leading large-T term of ``expr`` among const, const * log T (what u_1 is here)."""
    constant = sympy.limit(expr, T, sympy.oo)
    if constant.is_finite:
        return constant
    per_log = sympy.limit(expr / sympy.log(T), T, sympy.oo)
    if per_log.is_finite and per_log != 0:
        return per_log * sympy.log(T)
    raise NotImplementedError(f"first correction {expr} is neither O(1) nor O(log T)")


@functools.lru_cache(maxsize=None)
def aging_law(loss: str, output: str = "sigmoid") -> AgingLaw:
    """Derive the late-time asymptotics (leading exponent and first correction) of every quantity."""
    dl, error, out = _logit_functions(loss, output)
    zf = sympy.Function("z")
    flow = sympy.Eq(zf(tau).diff(tau), -K * dl.subs(z, zf(tau)))
    g_u = _in_u(-dl)
    F = sympy.integrate(sympy.cancel(1 / (u * g_u)), u)
    integral = sympy.Eq(sympy.expand_log(F.subs(u, sympy.exp(zf(tau))), force=True), K * tau + sympy.Symbol("C"))
    constant = sympy.Eq(sympy.Symbol("C"), sympy.expand_log(F.subs(u, sympy.exp(z0)), force=True))
    m = sympy.limit(sympy.log(F) / sympy.log(u), u, sympy.oo)
    c = sympy.limit(F / u ** m, u, sympy.oo)
    u0 = (T / c) ** (1 / m)
    u1 = _leading_growth(sympy.simplify(-(F.subs(u, u0) - T) / sympy.diff(F, u).subs(u, u0)))
    logit = sympy.Eq(sympy.Symbol("z"), sympy.log(u0) + u1 / u0)
    d_out = sympy.diff(out, z)
    exact = dict(error=error, output_derivative=d_out, output_kernel=K * d_out ** 2, loss_derivative=-dl)
    quantities = []
    for name in QUANTITY_NAMES:
        q_u = _in_u(exact[name])
        amplitude, k, b = _power_in_u(q_u)
        leading = amplitude * u0 ** (-k)
        correction = sympy.simplify(-(k * u1 - b) / u0) if k != 0 else sympy.Integer(0)
        quantities.append(QuantityAsymptotics(name, q_u, sympy.simplify(-k / m), sympy.simplify(leading),
                                               correction))
    return AgingLaw(loss, output, flow, integral, constant, m, c, logit, tuple(quantities))


def numeric_functions(law: AgingLaw):
    """NumPy functions for tests and plots: g(z), F(u), each quantity's exact Q(u) and expansion(T)."""
    zf = sympy.Function("z")(tau)
    g = sympy.lambdify((z, K), law.flow.rhs.subs(zf, z), "numpy")
    F = sympy.lambdify(u, law.integral.lhs.subs(zf, sympy.log(u)), "numpy")
    exact = {q.name: sympy.lambdify((u, K), q.exact, "numpy") for q in law.quantities}
    leading = {q.name: sympy.lambdify((T, K), q.leading, "numpy") for q in law.quantities}
    expanded = {q.name: sympy.lambdify((T, K), q.expansion(), "numpy") for q in law.quantities}
    return g, F, exact, leading, expanded
