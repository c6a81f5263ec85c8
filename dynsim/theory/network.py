"""Parameter gradients, empirical NTK and one-step training response of the simple network.

The network (``dynsim.models.simple``): f(x) = s sum_{i=1..N} a_i sigma(w_i . x + b_i) + c.
Every derivation here is done by SymPy on ONE hidden unit written with indexed inputs,

    f_unit(x) = s a sigma(sum_{d=1..D} w_d x_d + b),

because units only interact through the sum: a gradient block of unit i depends on unit i's
parameters alone, and so does unit i's share of the NTK and of the response. After
differentiating, the pre-activations sum_d w_d x_d + b at x and x' are renamed u and v and the
inner product sum_d x_d x'_d is renamed ``dot``; the result is a closed expression in
(u, v, a, dot, s[, g]) -- the derivation fails loudly if anything else is left over.

Response (dynsim's definition, DESIGN.md sec. 4): one plain gradient step on the source x_s,
Delta theta = -eta g grad f(x_s) with g = l'(f(x_s), y_s), and R(x; x_s) = f(x; theta + Delta theta)
- f(x; theta). Inside one unit the step moves u(x) by -eta g (grad_w f(x_s) . x + grad_b f(x_s))
exactly (u is linear in w, b), so the unit's exact response is a closed function of eta; its
Taylor coefficients in eta are R = eta R_1 + eta^2 R_2 + O(eta^3). R_1 = -g Theta(x, x_s) comes
out of the expansion (it is not put in), which the tests check against the NTK derived from the
gradients.
"""
import dataclasses
import functools

import numpy as np
import sympy

from . import symbolic as sym
from .codegen import generate

SCALINGS = ("standard", "ntk")

# Indices and sizes of the indexed (display) forms.
d_index, e_index, j_index = sympy.symbols("d e j", integer=True)
N_sym, D_sym = sympy.symbols("N D", integer=True, positive=True)

# One hidden unit, indexed: its input weights w_d, bias b, and the inputs x, x' (x' is x_s for the response).
_w = sympy.IndexedBase("w")
_b = sympy.Symbol("b", real=True)
_x = sympy.IndexedBase("x")
_xp = sympy.IndexedBase("x'")

GRADIENT_ARGS = (sym.u, sym.a, sym.s)
SIGMA = sympy.Function("sigma")  # the activation, undefined while differentiating


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the derivations depend on: activation, output scaling, which biases are trained."""

    activation: str
    scaling: str = "ntk"
    hidden_bias: bool = True
    output_bias: bool = False

    def __post_init__(self):
        sym.check_activation(self.activation)
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; allowed: {', '.join(SCALINGS)}")

    @classmethod
    def of(cls, model) -> "Architecture":
        """The architecture of a ``SimpleNet`` (or anything with the same attributes)."""
        return cls(str(model.activation), str(model.scaling), bool(model.hidden_bias), bool(model.output_bias))

    @property
    def scale(self) -> sympy.Expr:
        """s as a function of the width N."""
        return 1 / sympy.sqrt(N_sym) if self.scaling == "ntk" else sympy.Integer(1)

    @property
    def tag(self) -> str:
        """A short identifier for generated function names."""
        return f"{self.activation}_{'b' if self.hidden_bias else 'nob'}"


@dataclasses.dataclass(frozen=True)
class UnitDerivation:
    """Per-hidden-unit results in the scalar symbols of ``symbolic`` (u, v, a, dot, s, g).

    For a concrete activation, or (``activation`` None) for an undefined function ``SIGMA``.

    grad_u: d f / d u_i = d f / d b_i; the input-weight gradient is grad_u * x (d f / d W_id = grad_u x_d)
    grad_a: d f / d a_i
    ntk:    unit i's summand of Theta(x, x') = grad f(x) . grad f(x')
    response_first, response_second: unit i's share of R_1 and R_2 (R = eta R_1 + eta^2 R_2 + O(eta^3))
    output_bias_ntk, output_bias_first: the output bias's share (0 without one)
    """

    activation: str | None  # None: the generic form with an undefined sigma
    hidden_bias: bool
    output_bias: bool
    grad_u: sympy.Expr
    grad_a: sympy.Expr
    ntk: sympy.Expr
    response_first: sympy.Expr
    response_second: sympy.Expr
    output_bias_ntk: sympy.Expr
    output_bias_first: sympy.Expr


def _pre_activation(inputs, hidden_bias: bool) -> sympy.Expr:
    return sympy.Sum(_w[d_index] * inputs[d_index], (d_index, 1, D_sym)) + (_b if hidden_bias else 0)


def _inside_index_range(expr: sympy.Expr) -> sympy.Expr:
    """Drop the ``Piecewise((..., 1 <= e <= D), (0, True))`` SymPy attaches to d w_d / d w_e.

    Only conditions on the index and the dimension are removed: we always differentiate with
    respect to a weight that exists. Conditions on pre-activations (relu) are kept.
    """
    range_symbols = {e_index, D_sym}

    def is_range(p):
        return isinstance(p, sympy.Piecewise) and p.args[0].cond.free_symbols <= range_symbols
    return expr.replace(is_range, lambda p: p.args[0].expr)


def _sum_through_piecewise(expr: sympy.Expr) -> sympy.Expr:
    """sum_e Piecewise((A_e, cond), ...) -> Piecewise((sum_e A_e, cond), ...) when no cond involves e.

    SymPy folds relu's Piecewise factors into the summand of the input-weight sum; once the
    pre-activations are renamed u, v the conditions no longer depend on the summation index, and
    taking the sum inside each branch lets the inner product sum_e x_e x'_e be recognised.
    """
    def movable(q):
        if not (isinstance(q, sympy.Sum) and isinstance(q.function, sympy.Piecewise)):
            return False
        indices = {limit[0] for limit in q.limits}
        return all(not (branch.cond.free_symbols & indices) for branch in q.function.args)

    def move(q):
        return sympy.Piecewise(*[(sympy.Sum(branch.expr, *q.limits), branch.cond) for branch in q.function.args])
    return expr.replace(movable, move)


def _to_scalars(expr: sympy.Expr, hidden_bias: bool, allowed) -> sympy.Expr:
    """Rename pre-activations to u, v and sum_d x_d x'_d to dot; check nothing else is left."""
    expr = sympy.factor_terms(expr)
    expr = expr.subs({_pre_activation(_x, hidden_bias): sym.u, _pre_activation(_xp, hidden_bias): sym.v})
    expr = sympy.factor_terms(_sum_through_piecewise(expr))
    for index in (d_index, e_index):
        expr = expr.subs(sympy.Sum(_x[index] * _xp[index], (index, 1, D_sym)), sym.dot)
    expr = sympy.factor_terms(expr.doit())  # Subs(d sigma(xi)/d xi, xi, u) -> d sigma(u)/d u
    left = expr.free_symbols - set(allowed)
    if left:
        raise RuntimeError(f"derivation did not close: {expr} still has {sorted(map(str, left))}")
    return expr


@functools.lru_cache(maxsize=None)
def derive_generic_unit(hidden_bias: bool, output_bias: bool = False) -> UnitDerivation:
    """The per-unit results for an undefined activation ``sigma`` (its derivatives stay symbolic).

    Differentiating through an undefined function keeps every pre-activation inside
    ``sigma(...)`` intact (a concrete activation would let SymPy expand, e.g., exp(-2 (b + w.x))),
    so the renaming to u, v is exact; ``derive_unit`` then inserts the concrete activation.
    """
    hb = hidden_bias
    sigma = SIGMA

    def f_unit(inputs, w_at, b_at, a_at):
        pre = sympy.Sum(w_at(d_index) * inputs[d_index], (d_index, 1, D_sym)) + (b_at if hb else 0)
        return sym.s * a_at * sigma(pre)

    f_x = f_unit(_x, lambda k: _w[k], _b, sym.a)
    grad_w = _inside_index_range(sympy.diff(f_x, _w[e_index]).doit())     # ... * x_e
    grad_b = sympy.diff(f_x, _b) if hb else sympy.Integer(0)
    grad_a = sympy.diff(f_x, sym.a)

    def at_xp(expr):
        return expr.subs(_x, _xp)

    # 1. The unit's NTK summand: the sum over its parameters of products of gradients at x and x'.
    ntk = (sympy.Sum(grad_w * at_xp(grad_w), (e_index, 1, D_sym)) + grad_b * at_xp(grad_b)
           + grad_a * at_xp(grad_a))

    # 2. The exact response of the unit to a gradient step on x' (= x_s), as a function of eta.
    step = -sym.eta * sym.g
    f_moved = f_unit(_x, lambda k: _w[k] + step * at_xp(grad_w).subs(e_index, k),
                     _b + step * at_xp(grad_b), sym.a + step * at_xp(grad_a))
    exact = f_moved - f_x
    first = sympy.diff(exact, sym.eta).subs(sym.eta, 0)
    second = sympy.diff(exact, sym.eta, 2).subs(sym.eta, 0) / 2

    # d f / d u: the coefficient of x_e in grad_w, and equal to grad_b when there is a hidden bias.
    grad_u = _to_scalars(grad_w.subs(_x[e_index], 1), hb, GRADIENT_ARGS)  # linear in the free x_e
    if hb and sympy.simplify(_to_scalars(grad_b, hb, GRADIENT_ARGS) - grad_u) != 0:
        raise RuntimeError("inconsistent derivation: d f / d b differs from d f / d u")
    # The output bias enters f as "+ c": d f / d c = 1, so it adds 1 to Theta and -g to R_1, nothing to R_2.
    output_bias_ntk = sympy.Integer(1 if output_bias else 0)
    return UnitDerivation(
        activation=None, hidden_bias=hb, output_bias=output_bias,
        grad_u=grad_u,
        grad_a=_to_scalars(grad_a, hb, GRADIENT_ARGS),
        # Grouped by a^2 (the input-weight and bias blocks) for display: a^2 s^2 (dot + 1) sigma' sigma' + ...
        ntk=sympy.collect(sympy.expand(_to_scalars(ntk, hb, sym.UNIT_ARGS)), sym.a ** 2, sympy.factor),
        response_first=_to_scalars(first, hb, sym.RESPONSE_ARGS),
        response_second=_to_scalars(second, hb, sym.RESPONSE_ARGS),
        output_bias_ntk=output_bias_ntk,
        output_bias_first=-sym.g * output_bias_ntk,
    )


def specialise(expr: sympy.Expr, activation: str) -> sympy.Expr:
    """Insert a concrete activation for the undefined ``sigma`` and evaluate its derivatives."""
    concrete = sympy.Lambda(sym.z, sym.activation(activation))
    return sympy.factor_terms(expr.replace(SIGMA, concrete).doit())


@functools.lru_cache(maxsize=None)
def derive_unit(arch: Architecture) -> UnitDerivation:
    """The per-unit results for ``arch.activation``; memoised."""
    generic = derive_generic_unit(arch.hidden_bias, arch.output_bias)
    fields = {name: specialise(getattr(generic, name), arch.activation)
              for name in ("grad_u", "grad_a", "ntk", "response_first", "response_second")}
    return dataclasses.replace(generic, activation=arch.activation, **fields)


def prime_notation(expr: sympy.Expr) -> sympy.Expr:
    """Write Derivative(sigma(u), (u, k)) as sigma'(u), sigma''(u) for display."""
    def is_sigma_derivative(q):
        return isinstance(q, sympy.Derivative) and isinstance(q.expr, SIGMA)

    def primed(q):
        order = sum(count for _, count in q.variable_count)
        return sympy.Function("sigma" + "'" * order)(*q.expr.args)
    return expr.replace(is_sigma_derivative, primed)


# ---------------------------------------------------------------------------------------------
# Display forms: sums over hidden units with indexed parameters, s replaced by its value.

A_DISPLAY = sympy.IndexedBase("a")
U_DISPLAY = sympy.IndexedBase("u")
V_DISPLAY = sympy.IndexedBase("v")
W_DISPLAY = sympy.IndexedBase("W")
B_DISPLAY = sympy.IndexedBase("b")


def display_inputs(second: str = "x'"):
    return _x, sympy.IndexedBase(second)


def pre_activation_definitions(arch: Architecture, second: str = "x'"):
    """(u_j, its definition), (v_j, its definition) for display."""
    x, xp = display_inputs(second)
    bias = B_DISPLAY[j_index] if arch.hidden_bias else 0

    def pre(inputs):
        return sympy.Sum(W_DISPLAY[j_index, d_index] * inputs[d_index], (d_index, 1, D_sym)) + bias
    return ((U_DISPLAY[j_index], pre(x)), (V_DISPLAY[j_index], pre(xp)))


def sum_over_units(unit_expr: sympy.Expr, arch: Architecture, second: str = "x'") -> sympy.Expr:
    """sum_{j=1..N} unit_expr with u, v, a -> u_j, v_j, a_j, dot -> sum_d x_d x'_d, s -> its value."""
    x, xp = display_inputs(second)
    summand = unit_expr.subs({sym.u: U_DISPLAY[j_index], sym.v: V_DISPLAY[j_index], sym.a: A_DISPLAY[j_index],
                              sym.dot: sympy.Sum(x[d_index] * xp[d_index], (d_index, 1, D_sym)),
                              sym.s: arch.scale})
    return sympy.Sum(sympy.factor_terms(summand), (j_index, 1, N_sym))


# ---------------------------------------------------------------------------------------------
# Compiled forms and numeric evaluation at given parameters.

def compiled_activation(activation: str, order: int = 0):
    """sigma^(order) generated from its SymPy definition (a ``GeneratedFunction``)."""
    prefix = "act" if order == 0 else "d" * order + "act"
    return generate(f"{prefix}_{activation}", sym.activation(activation, order), sym.ACTIVATION_ARGS)


@functools.lru_cache(maxsize=None)
def compiled_unit(arch: Architecture):
    """The generated functions of ``derive_unit(arch)`` (see ``codegen``), as a dict by name."""
    unit = derive_unit(arch)
    tag = arch.tag
    return dict(
        activation=compiled_activation(arch.activation),
        grad_u=generate(f"grad_u_{arch.activation}", unit.grad_u, GRADIENT_ARGS),
        grad_a=generate(f"grad_a_{arch.activation}", unit.grad_a, GRADIENT_ARGS),
        ntk=generate(f"ntk_unit_{tag}", unit.ntk, sym.UNIT_ARGS),
        response_first=generate(f"response1_unit_{tag}", unit.response_first, sym.RESPONSE_ARGS),
        response_second=generate(f"response2_unit_{tag}", unit.response_second, sym.RESPONSE_ARGS),
    )


def _blocks(model, theta):
    p = model.unpack(np.asarray(theta, dtype=np.float64))
    W, a = p["W"], p["a"]
    b = p["b"] if model.hidden_bias else np.zeros(model.width)
    c = float(p["c"][0]) if model.output_bias else 0.0
    return W, b, a, c


def _pre(x, W, b):
    return np.asarray(x, dtype=np.float64) @ W.T + b


def network_outputs(model, theta, x) -> np.ndarray:
    """f(x_k) for the rows of x [K, D], with the activation generated from its SymPy definition."""
    W, b, a, c = _blocks(model, theta)
    act = compiled_unit(Architecture.of(model))["activation"]
    return model.output_scale * act(_pre(x, W, b)) @ a + c


def parameter_gradient(model, theta, x) -> np.ndarray:
    """d f(x_k) / d theta [K, n_params], in the model's flat layout, from the derived gradients."""
    arch = Architecture.of(model)
    fns = compiled_unit(arch)
    W, b, a, c = _blocks(model, theta)
    x = np.asarray(x, dtype=np.float64)
    U = _pre(x, W, b)
    s = model.output_scale
    gu, ga = fns["grad_u"](U, a, s), fns["grad_a"](U, a, s)
    out = np.zeros((x.shape[0], model.n_params))
    # Written through the model's own views, so the flat order is whatever its layout stores.
    blocks = model.unpack(out)
    blocks["W"][...] = gu[:, :, None] * x[:, None, :]      # [K, N, D]: d f / d W[i, d]
    blocks["a"][...] = ga
    if model.hidden_bias:
        blocks["b"][...] = gu
    if model.output_bias:
        blocks["c"][...] = 1.0
    return out


def _sum_over_units(unit_fn, pairs: int, width: int, args_of) -> np.ndarray:
    """sum_i unit_fn(*args_of(units)) over blocks of hidden units, so that the broadcast
    [..., pairs, units] arrays stay near 2e6 elements whatever the width and the number of inputs."""
    block = max(1, 2_000_000 // max(pairs, 1))
    total = 0.0
    for start in range(0, width, block):
        total = total + unit_fn(*args_of(slice(start, start + block))).sum(axis=-1)
    return total


def empirical_ntk(model, theta, x1, x2) -> np.ndarray:
    """Theta(x1_k, x2_l) [K1, K2] summed from the derived per-unit NTK."""
    arch = Architecture.of(model)
    unit = compiled_unit(arch)["ntk"]
    W, b, a, _ = _blocks(model, theta)
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    U, V, dot = _pre(x1, W, b), _pre(x2, W, b), (x1 @ x2.T)[:, :, None]
    total = _sum_over_units(unit, len(x1) * len(x2), model.width,
                            lambda i: (U[:, None, i], V[None, :, i], a[i], dot, model.output_scale))
    return total + float(derive_unit(arch).output_bias_ntk)


def loss_derivative(loss: str, f, y) -> np.ndarray:
    """l'(f, y) from the symbolic loss (generated code)."""
    fn = generate(f"dloss_{loss}", sym.loss(loss, 1), sym.LOSS_ARGS)
    return fn(np.asarray(f, dtype=np.float64), np.asarray(y, dtype=np.float64))


def response_expansion(model, theta, x_probe, x_source, g) -> tuple[np.ndarray, np.ndarray]:
    """(R_1, R_2) [source, probe]: R(x_p; x_s) = eta R_1 + eta^2 R_2 + O(eta^3).

    ``g`` [source] is l'(f(x_s), y_s) at ``theta`` (see ``loss_derivative``).
    """
    arch = Architecture.of(model)
    fns = compiled_unit(arch)
    unit = derive_unit(arch)
    W, b, a, _ = _blocks(model, theta)
    xp, xs = np.asarray(x_probe, dtype=np.float64), np.asarray(x_source, dtype=np.float64)
    U, V, dot = _pre(xp, W, b), _pre(xs, W, b), (xs @ xp.T)[:, :, None]
    g = np.asarray(g, dtype=np.float64)[:, None, None]

    def args_of(i):
        return U[None, :, i], V[:, None, i], a[i], dot, model.output_scale, g
    pairs = len(xs) * len(xp)
    first = _sum_over_units(fns["response_first"], pairs, model.width, args_of)
    second = _sum_over_units(fns["response_second"], pairs, model.width, args_of)
    return first - float(unit.output_bias_ntk) * g[:, :, 0], second
