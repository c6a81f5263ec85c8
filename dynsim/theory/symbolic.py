"""Symbols, activations and losses, defined once as SymPy expressions.

Everything in ``dynsim.theory`` is derived from the definitions here. The compiled kernels of the
simulator (``dynsim.models.activations``, ``dynsim.losses``) are hand-written for speed; the tests
check them against these expressions at seeded points.

Scalar symbols used as arguments of generated code (always in the orders given by the ``*_ARGS``
tuples below, so that a generated function's signature never depends on SymPy's ordering):

    z          argument of an activation
    u, v       pre-activation w_i . x + b_i of one hidden unit at x and at x' (or at the source x_s)
    a          that unit's output weight a_i
    dot        x . x'
    s          output scale: 1 ("standard") or 1/sqrt(N) ("ntk")
    g          loss derivative l'(f(x_s), y_s) at the source sample
    q, q_p, c  covariances of (u, v) at initialisation: Var u, Var v, Cov(u, v)
    rho        their correlation c / sqrt(q q_p) (the argument of compiled kernels: see kernels.py)
"""
import sympy

from ..losses import LOSSES
from ..models.activations import ACTIVATIONS

z = sympy.Symbol("z", real=True)
u, v, a, dot, s, g, eta = sympy.symbols("u v a dot s g eta", real=True)
q, q_p = sympy.symbols("q q_p", positive=True)
c = sympy.Symbol("c", real=True)
rho = sympy.Symbol("rho", real=True)
f_sym, y_sym = sympy.symbols("f y", real=True)

ACTIVATION_ARGS = (z,)
UNIT_ARGS = (u, v, a, dot, s)          # per-unit NTK summand
RESPONSE_ARGS = (u, v, a, dot, s, g)   # per-unit response coefficients
COVARIANCE_ARGS = (q, q_p, rho)        # Gaussian expectations at initialisation
LOSS_ARGS = (f_sym, y_sym)

ACTIVATION_EXPRESSIONS = {
    "linear": z,
    # relu'(0) = 0, as in the compiled kernels: the derivative of this Piecewise is 1 only for z > 0.
    "relu": sympy.Piecewise((z, z > 0), (0, True)),
    "tanh": sympy.tanh(z),
    "sigmoid": 1 / (1 + sympy.exp(-z)),
    "erf": sympy.erf(z),
    "softplus": sympy.log(1 + sympy.exp(z)),
}

LOSS_EXPRESSIONS = {
    "squared": (f_sym - y_sym) ** 2 / 2,
    "cross_entropy": sympy.log(1 + sympy.exp(-y_sym * f_sym)),
    # squared error of the sigmoid output against t = (1 + y) / 2, on the logit f (labels +-1)
    "sigmoid_squared": (1 / (1 + sympy.exp(-f_sym)) - (1 + y_sym) / 2) ** 2 / 2,
}

if set(ACTIVATION_EXPRESSIONS) != set(ACTIVATIONS) or set(LOSS_EXPRESSIONS) != set(LOSSES):
    raise ImportError("dynsim.theory.symbolic must define exactly the activations "
                      f"{sorted(ACTIVATIONS)} and losses {sorted(LOSSES)} of the simulator")


def check_activation(name: str) -> str:
    if name not in ACTIVATION_EXPRESSIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATION_EXPRESSIONS)}")
    return name


def activation(name: str, order: int = 0) -> sympy.Expr:
    """sigma^(order)(z) for the activation ``name``, as an expression in ``z``."""
    expr = ACTIVATION_EXPRESSIONS[check_activation(name)]
    return sympy.diff(expr, z, order) if order else expr


def apply_activation(name: str, argument, order: int = 0) -> sympy.Expr:
    """sigma^(order)(argument): the definition with ``z`` replaced (chain rule then works through it)."""
    return activation(name, order).subs(z, argument)


def loss(name: str, order: int = 0) -> sympy.Expr:
    """l(f, y) or its ``order``-th derivative in f."""
    if name not in LOSS_EXPRESSIONS:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(LOSS_EXPRESSIONS)}")
    expr = LOSS_EXPRESSIONS[name]
    return sympy.diff(expr, f_sym, order) if order else expr
