"""Analytic solutions of the response-law model (``dynsim.models.response_law``) under gradient flow.

In continuous time t = eta * step the law is df(x)/dt = -A(t) (1/P) sum_s K(x, x_s) l'(f(x_s), y_s),
with the power-law amplitude A(t) = A0 (1 + t / tau)^-beta. Its integral

    I(t) = int_0^t A = A0 tau ((1 + t/tau)^(1 - beta) - 1) / (1 - beta)     (beta != 1)
                     = A0 tau log(1 + t/tau)                                  (beta = 1)

is the "age" the dynamics run on: every solution below is the constant-kernel solution at time
I(t). Derived with SymPy (integrate, dsolve, solve) in ``solutions()``:

* one sample, squared loss: f - y = (f0 - y) exp(-K I(t)): a stretched exponential in (1 + t/tau)
  for beta < 1, a power law (1 + t/tau)^(-K A0 tau) for beta = 1, and for beta > 1 a residual that
  freezes at (f0 - y) exp(-K A0 tau / (beta - 1)): the sample is never fitted (lost plasticity);
* one sample, the saturating losses, z = y f: cross-entropy gives z + e^z = z0 + e^z0 + K I(t), so
  z = u - W(e^u) (Lambert W), u = z0 + e^z0 + K I; the sigmoid output under squared error gives
  G(z) = G(z0) + K I(t) with G(z) = e^(2z)/2 + 3 e^z + 3 z - e^(-z) (solved for z numerically);
* two samples x1, x2 (targets y1, y2), a Gaussian kernel of length l, f0 = 0, squared loss, full
  batch: f_t(x) = c1(t) k(x, x1) + c2(t) k(x, x2), c = sum over the kernel's two modes, and where c1
  and c2 differ in sign the boundary f_t = 0 sits at
  x_b(t) = (x1 + x2) / 2 + l^2 log(-c1 / c2) / (x2 - x1). It moves from its start to its end through
  the slow mode exp(-(1 - rho) I(t) / 2), rho = k(x1, x2); with beta = 1 its speed is a power law,
  |dx_b/dt| ~ t^-(1 + (1 - rho) A0 tau / 2): the boundary freezes.
"""
import dataclasses
import functools

import numpy as np
import scipy.optimize
import scipy.special
import sympy

t, tau, s = sympy.symbols("t tau s", positive=True)
A0, K = sympy.symbols("A_0 K", positive=True)
beta = sympy.Symbol("beta", nonnegative=True)
f0, y, z0 = sympy.symbols("f_0 y z_0", real=True)
x, x1, x2, y1, y2 = sympy.symbols("x x_1 x_2 y_1 y_2", real=True)
ell = sympy.Symbol("l", positive=True)
rho = sympy.Symbol("rho", positive=True)
I_sym = sympy.Symbol("I", nonnegative=True)
c1s, c2s = sympy.symbols("c_1 c_2", real=True)


@dataclasses.dataclass(frozen=True)
class LawSolutions:
    """The derived solutions (SymPy), each an equation to print, and their pieces to evaluate."""

    amplitude: sympy.Expr        # A(t)
    age: sympy.Expr              # I(t) = int_0^t A (Piecewise in beta)
    age_beta_one: sympy.Expr     # I(t) at beta = 1
    squared: sympy.Expr          # f(t) of one sample, squared loss, in terms of I
    squared_frozen: sympy.Expr   # lim_{t -> oo} (f - y) / (f0 - y) for beta > 1
    squared_power: sympy.Expr    # the exponent of (1 + t/tau) of (f - y) at beta = 1
    cross_entropy: sympy.Expr    # z(I), one sample
    sigmoid_squared_g: sympy.Expr  # G(z) of the implicit sigmoid-squared solution G(z) = G(z0) + K I
    two_sample_c: tuple          # (c1, c2) in terms of I, rho, y1, y2 (Gaussian kernel, f0 = 0, P = 2)
    boundary: sympy.Expr         # x_b in terms of c1, c2
    boundary_speed_exponent: sympy.Expr  # late-time log-log slope of |dx_b/dt| at beta = 1

    def equations(self) -> tuple[sympy.Eq, ...]:
        f, zf, xb, cc1, cc2 = (sympy.Function(n)(t) for n in ("f", "z", "x_b", "c_1", "c_2"))
        G = sympy.Function("G")
        return (sympy.Eq(sympy.Function("A")(t), self.amplitude),
                sympy.Eq(sympy.Function("I")(t), self.age),
                sympy.Eq(f, self.squared.subs(I_sym, sympy.Function("I")(t))),
                sympy.Eq(sympy.Limit((f - y) / (f0 - y), t, sympy.oo), self.squared_frozen),
                sympy.Eq(zf, self.cross_entropy.subs(I_sym, sympy.Function("I")(t))),
                sympy.Eq(G(zf), G(z0) + K * sympy.Function("I")(t)),
                sympy.Eq(G(sympy.Symbol("z")), self.sigmoid_squared_g),
                sympy.Eq(cc1, self.two_sample_c[0].subs(I_sym, sympy.Function("I")(t))),
                sympy.Eq(cc2, self.two_sample_c[1].subs(I_sym, sympy.Function("I")(t))),
                sympy.Eq(xb, self.boundary.subs({c1s: cc1, c2s: cc2})))

    def notes(self) -> tuple[str, ...]:
        return ("gradient flow t = eta * step of df(x)/dt = -A(t) (1/P) sum_s K(x, x_s) l'(f(x_s), y_s), "
                "A(t) = A0 (1 + t/tau)^-beta; I(t) = int_0^t A is the age the constant-kernel solutions run on",
                f"one sample, squared loss, beta = 1: f - y ~ (1 + t/tau)^({sympy.sstr(self.squared_power)}), a "
                "power law; beta < 1: a stretched exponential; beta > 1: the residual freezes at the limit above",
                "one sample, cross-entropy (z = y f): z = u - W(e^u), u = z0 + e^z0 + K I(t); sigmoid output under "
                "squared error: G(z) = G(z0) + K I(t) (z found numerically)",
                "two samples, Gaussian kernel k = exp(-(x - x')^2 / (2 l^2)), rho = k(x1, x2), f0 = 0, full batch "
                "(1/P = 1/2): f = c1 k(x, x1) + c2 k(x, x2); the boundary f = 0 where c1 c2 < 0",
                f"beta = 1: the boundary speed |dx_b/dt| ~ t^({sympy.sstr(self.boundary_speed_exponent)}) at late "
                "times: it freezes")


@functools.lru_cache(maxsize=None)
def solutions() -> LawSolutions:
    """Derive every solution of the module docstring."""
    amplitude = A0 * (1 + t / tau) ** (-beta)
    age = sympy.integrate(amplitude.subs(t, s), (s, 0, t), conds="none")
    age = sympy.piecewise_fold(sympy.Piecewise((A0 * tau * sympy.log(1 + t / tau), sympy.Eq(beta, 1)),
                                               (sympy.simplify(age), True)))
    age_one = sympy.integrate((A0 / (1 + s / tau)), (s, 0, t))
    # one sample, squared loss, in the age I: df/dI = -K (f - y)
    fI = sympy.Function("f")
    squared = sympy.dsolve(sympy.Eq(fI(I_sym).diff(I_sym), -K * (fI(I_sym) - y)), fI(I_sym), ics={fI(0): f0}).rhs
    b = sympy.Symbol("b", positive=True)  # beta > 1 written as 1 + b
    age_late = sympy.limit(sympy.simplify(age.args[1][0].subs(beta, 1 + b)), t, sympy.oo)
    frozen = sympy.simplify(((squared - y) / (f0 - y)).subs(I_sym, age_late)).subs(b, beta - 1)
    power = sympy.simplify(sympy.limit(t * sympy.diff(sympy.log(sympy.exp(-K * age_one)), t), t, sympy.oo))
    # cross-entropy, target +1 on z: dz/dI = K sigma(-z) = K / (1 + e^z): separable
    zs = sympy.Symbol("z", real=True)
    invariant = sympy.integrate(1 + sympy.exp(zs), zs)             # z + e^z
    u = invariant.subs(zs, z0) + K * I_sym
    cross_entropy = u - sympy.LambertW(sympy.exp(u))
    if sympy.simplify(invariant.subs(zs, cross_entropy).subs(sympy.exp(u - sympy.LambertW(sympy.exp(u))),
                                                             sympy.LambertW(sympy.exp(u))) - u) != 0:
        raise ArithmeticError("the Lambert-W solution does not satisfy z + e^z = u")
    # sigmoid output, squared error on p = sigmoid(z), target 1: dz/dI = K p (1 - p)^2
    p = 1 / (1 + sympy.exp(-zs))
    g_sigmoid = sympy.expand(sympy.integrate(sympy.expand(sympy.simplify(1 / (p * (1 - p) ** 2))), zs))
    # two samples, Gaussian kernel matrix [[1, rho], [rho, 1]], full batch (1/P = 1/2), f0 = 0
    c = sympy.zeros(2, 1)
    for lam, vec in ((1 + rho, sympy.Matrix([1, 1]) / sympy.sqrt(2)), (1 - rho, sympy.Matrix([1, -1]) / sympy.sqrt(2))):
        c += vec * (vec.T * sympy.Matrix([y1, y2]))[0] * (1 - sympy.exp(-lam * I_sym / 2)) / lam
    xs = sympy.Symbol("x", real=True)
    kern = lambda a: sympy.exp(-(xs - a) ** 2 / (2 * ell ** 2))  # noqa: E731
    boundary = sympy.solve(sympy.Eq(sympy.log(c1s) - (xs - x1) ** 2 / (2 * ell ** 2),
                                    sympy.log(-c2s) - (xs - x2) ** 2 / (2 * ell ** 2)), xs)[0]
    if sympy.simplify((c1s * kern(x1) + c2s * kern(x2)).subs(xs, boundary).subs({c1s: 2, c2s: -1, x1: 0, x2: 1,
                                                                                 ell: sympy.Rational(1, 2)})) != 0:
        raise ArithmeticError("the boundary formula does not zero the two-sample function")
    # Late times: c(I) tends to its finite limit K^-1 y, so d x_b / dI, a combination of c1'/c1 and
    # c2'/c2, decays like the slowest exponential in c' = dc/dI: its rate is read off the exponents.
    rates = {-sympy.simplify(arg.exp.diff(I_sym)) for arg in sympy.diff(c[0], I_sym).atoms(sympy.exp)}
    # the two rates are (1 -+ rho) / 2, in the same order for every 0 < rho < 1: compare them at one rho
    slow_rate = min(rates, key=lambda r: float(r.subs(rho, sympy.Rational(1, 2))))
    # beta = 1: dx_b/dt = A(t) dx_b/dI, A ~ A0 (t/tau)^-1 and exp(-rate I) = (1 + t/tau)^(-rate A0 tau)
    slope = -1 - slow_rate * A0 * tau
    return LawSolutions(amplitude=amplitude, age=age, age_beta_one=age_one, squared=squared, squared_frozen=frozen,
                        squared_power=power, cross_entropy=cross_entropy, sigmoid_squared_g=g_sigmoid,
                        two_sample_c=(sympy.simplify(c[0]), sympy.simplify(c[1])), boundary=boundary,
                        boundary_speed_exponent=sympy.simplify(slope))


# -- numeric evaluation ------------------------------------------------------------------------------------
def age(times, a0: float, tau_value: float, beta_value: float) -> np.ndarray:
    """I(t) = int_0^t A0 (1 + s/tau)^-beta ds."""
    q = 1.0 + np.asarray(times, dtype=np.float64) / tau_value
    if beta_value == 1.0:
        return a0 * tau_value * np.log(q)
    return a0 * tau_value * np.expm1((1.0 - beta_value) * np.log(q)) / (1.0 - beta_value)


def one_sample(loss: str, z_start: float, kernel: float, ages) -> np.ndarray:
    """z = y f of one sample at the given ages I (squared: the residual factor's f with y = 1)."""
    ages = np.asarray(ages, dtype=np.float64)
    if loss == "squared":  # f with y = 1: 1 + (z0 - 1) exp(-K I)
        return 1.0 + (z_start - 1.0) * np.exp(-kernel * ages)
    if loss == "cross_entropy":
        u = z_start + np.exp(z_start) + kernel * ages
        # z = u - W(e^u), written with W's own log form for large u (e^u overflows beyond u ~ 700)
        return np.where(u < 700, u - np.real(scipy.special.lambertw(np.exp(np.minimum(u, 700)))),
                        np.log(u) - np.log(u) / u)
    if loss == "sigmoid_squared":
        g = lambda z: 0.5 * np.exp(2 * z) + 3 * np.exp(z) + 3 * z - np.exp(-z)  # noqa: E731 (derived above)
        out = []
        for target in g(z_start) + kernel * ages:
            out.append(scipy.optimize.brentq(lambda z: g(z) - target, z_start - 1.0, z_start + 50.0, xtol=1e-14))
        return np.array(out)
    raise ValueError(f"unknown loss {loss!r}; allowed: squared, cross_entropy, sigmoid_squared")


def two_sample_boundary(ages, x_1: float, x_2: float, y_1: float, y_2: float, length: float) -> np.ndarray:
    """x_b(I) of two samples under a Gaussian kernel (module docstring); NaN where c1 c2 >= 0."""
    ages = np.asarray(ages, dtype=np.float64)
    r = np.exp(-(x_2 - x_1) ** 2 / (2 * length ** 2))
    plus, minus = (y_1 + y_2) / 2, (y_1 - y_2) / 2
    fast, slow = -np.expm1(-(1 + r) * ages / 2) / (1 + r), -np.expm1(-(1 - r) * ages / 2) / (1 - r)
    c1, c2 = plus * fast + minus * slow, plus * fast - minus * slow
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(c1 * c2 < 0, (x_1 + x_2) / 2 + length ** 2 * np.log(-c1 / c2) / (x_2 - x_1), np.nan)
