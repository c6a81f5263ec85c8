"""Infinite-width kernels of the simple network at initialisation.

At initialisation the pre-activations of one hidden unit at two inputs, u = w.x + b and
v = w.x' + b, are jointly Gaussian with mean 0 and (w ~ N(0, sigma_w^2/D I), b ~ N(0, sigma_b^2))

    q = Var u = sigma_w^2 |x|^2 / D + sigma_b^2,   q_p = Var v,   c = Cov(u, v) = sigma_w^2 x.x' / D + sigma_b^2

(the sigma_b^2 terms only with a hidden bias). Everything below is an expectation over (u, v):

    K(q, q_p, c)    = E[sigma(u) sigma(v)]
    Kdot(q, q_p, c) = E[sigma'(u) sigma'(v)]

The NTK of ``network.derive_unit`` summed over N independent units, with a_i independent of (u, v)
and E[s^2 a_i^2] N = sigma_a^2 in both scalings, has the expectation

    E Theta(x, x') = sigma_a^2 (x.x' + [hidden bias]) Kdot + s^2 N K + [output bias]

exactly at every width (s^2 N = 1 for "ntk", N for "standard"); with "ntk" scaling this is the
infinite-width NTK, and the empirical NTK fluctuates around it by O(N^-1/2). The output
covariance (NNGP kernel) is E f(x) f(x') = sigma_a^2 K in both scalings.

Closed forms: linear (K = c, Kdot = 1); relu (arc-cosine kernels of order 1 and 0, Cho & Saul
2009); erf (arcsine kernel, Williams 1997, and a Gaussian integral for Kdot). tanh, sigmoid and
softplus have none: their expectations are 2-D Gauss-Hermite quadratures of the generated
activation functions.
"""
import dataclasses
import functools

import numpy as np
import scipy.special
import sympy

from . import symbolic as sym
from .codegen import generate
from .network import N_sym, compiled_activation

CLOSED_FORM = ("linear", "relu", "erf")

# Standard normal variables of the quadrature, and the network's init scales (display only).
z1, z2 = sympy.symbols("z_1 z_2", real=True)
sigma_w, sigma_b, sigma_a = sympy.symbols("sigma_w sigma_b sigma_a", positive=True)
ANGLE = sympy.Symbol("theta", nonnegative=True)  # relu: the angle acos(c / sqrt(q q_p))


@dataclasses.dataclass(frozen=True)
class GaussianKernels:
    """K = E[sigma(u) sigma(v)] and Kdot = E[sigma'(u) sigma'(v)] as expressions in (q, q_p, c).

    For activations without a closed form the expressions are unevaluated ``Integral`` objects
    (what is computed), and ``closed_form`` is False.
    """

    activation: str
    closed_form: bool
    value: sympy.Expr
    derivative: sympy.Expr
    definitions: tuple = ()  # (symbol, expression) pairs used in value/derivative (relu's angle)

    def explicit(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with the defined symbols written out."""
        return expr.subs(dict(self.definitions))


def _gaussian_integral(integrand_of_uv: sympy.Expr) -> sympy.Integral:
    """E over (u, v) ~ N(0, [[q, c], [c, q_p]]) written with two independent standard normals."""
    u_of_z = sympy.sqrt(sym.q) * z1
    v_of_z = sym.c / sympy.sqrt(sym.q) * z1 + sympy.sqrt(sym.q_p - sym.c ** 2 / sym.q) * z2
    density = sympy.exp(-(z1 ** 2 + z2 ** 2) / 2) / (2 * sympy.pi)
    integrand = integrand_of_uv.subs({sym.u: u_of_z, sym.v: v_of_z}, simultaneous=True) * density
    return sympy.Integral(integrand, (z1, -sympy.oo, sympy.oo), (z2, -sympy.oo, sympy.oo))


@functools.lru_cache(maxsize=None)
def gaussian_kernels(activation: str) -> GaussianKernels:
    sym.check_activation(activation)
    q, q_p, c = sym.q, sym.q_p, sym.c
    rho = c / sympy.sqrt(q * q_p)
    if activation == "linear":
        return GaussianKernels(activation, True, c, sympy.Integer(1))
    if activation == "relu":
        # Arc-cosine kernels of order 1 and 0, in the angle between the two pre-activations.
        value = sympy.sqrt(q * q_p) * (sympy.sin(ANGLE) + (sympy.pi - ANGLE) * sympy.cos(ANGLE)) / (2 * sympy.pi)
        return GaussianKernels(activation, True, value, (sympy.pi - ANGLE) / (2 * sympy.pi),
                               ((ANGLE, sympy.acos(rho)),))
    if activation == "erf":
        value = 2 / sympy.pi * sympy.asin(2 * c / sympy.sqrt((1 + 2 * q) * (1 + 2 * q_p)))
        # erf'(u) erf'(v) = (4/pi) exp(-u^2 - v^2), whose Gaussian mean is det(I + 2 Sigma)^(-1/2).
        derivative = 4 / sympy.pi / sympy.sqrt((1 + 2 * q) * (1 + 2 * q_p) - 4 * c ** 2)
        return GaussianKernels(activation, True, value, derivative)
    sigma_u = sym.apply_activation(activation, sym.u)
    sigma_v = sym.apply_activation(activation, sym.v)
    dsigma_u = sym.apply_activation(activation, sym.u, 1)
    dsigma_v = sym.apply_activation(activation, sym.v, 1)
    return GaussianKernels(activation, False, _gaussian_integral(sigma_u * sigma_v),
                           _gaussian_integral(dsigma_u * dsigma_v))


@functools.lru_cache(maxsize=None)
def closed_form_functions(activation: str):
    """The closed forms compiled in (q, q_p, rho): the caller clips rho to [-1, 1] exactly, which
    the compiled acos/asin/sqrt(1 - rho^2) need (c / sqrt(q q_p) can round to 1 + 1e-16 at x = x')."""
    k = gaussian_kernels(activation)
    in_rho = {sym.c: sym.rho * sympy.sqrt(sym.q * sym.q_p)}
    return (generate(f"kernel_{activation}", k.explicit(k.value).subs(in_rho), sym.COVARIANCE_ARGS),
            generate(f"kernel_dot_{activation}", k.explicit(k.derivative).subs(in_rho), sym.COVARIANCE_ARGS))


def quadrature_nodes(max_variance: float) -> int:
    """Gauss-Hermite nodes per dimension for pre-activation variances up to ``max_variance``.

    sigma'(u) = sech^2(u) (tanh) has width ~1 in u, i.e. ~q^-1/2 in the standard normal z, and
    the nodes near z = 0 are ~n^-1/2 apart: n must grow like q. Measured relative errors against
    1500 nodes, on tanh (the hardest): 3e-14 at q = 1, 3e-13 at q = 3, 1e-9 at q = 6 and 1e-6 at
    q = 12 (n is capped at 400 for memory and time: pass ``nodes`` explicitly for large q);
    sigmoid and softplus stay below 1e-13 up to q = 12.
    """
    return int(np.clip(np.ceil(100.0 * max_variance) + 60, 80, 400))


def gauss_hermite_expectations(activation: str, q, q_p, c, nodes: int | None = None):
    """(K, Kdot) by a nodes x nodes Gauss-Hermite product rule, for any activation (arrays broadcast).

    (u, v) = (l11 z1, l21 z1 + l22 z2) with the Cholesky factor of the covariance, which stays
    defined for degenerate covariances (x = x', or q = 0). ``nodes`` None: ``quadrature_nodes``.
    """
    q, q_p, c = np.broadcast_arrays(*(np.asarray(t, dtype=np.float64) for t in (q, q_p, c)))
    shape = q.shape
    q, q_p, c = q.ravel(), q_p.ravel(), c.ravel()
    if nodes is None:
        nodes = quadrature_nodes(float(max(q.max(initial=0.0), q_p.max(initial=0.0))))
    t, w = scipy.special.roots_hermite(nodes)
    zs, ws = np.sqrt(2.0) * t, w / np.sqrt(np.pi)   # E[F(z)] = sum ws F(zs) for z ~ N(0, 1)
    weights = ws[:, None] * ws[None, :]
    l11 = np.sqrt(q)
    l21 = np.divide(c, l11, out=np.zeros_like(c), where=l11 > 0)
    l22 = np.sqrt(np.maximum(q_p - l21 ** 2, 0.0))
    act, dact = compiled_activation(activation, 0), compiled_activation(activation, 1)
    value, derivative = np.empty(q.size), np.empty(q.size)
    chunk = max(1, 2_000_000 // nodes ** 2)   # pairs per block: bounded memory
    for start in range(0, q.size, chunk):
        part = slice(start, start + chunk)
        U = l11[part, None] * zs                                                    # [pairs, n]
        V = l21[part, None, None] * zs[:, None] + l22[part, None, None] * zs[None, :]  # [pairs, n, n]
        value[part] = np.einsum("pk,pkl,kl->p", act(U), act(V), weights)
        derivative[part] = np.einsum("pk,pkl,kl->p", dact(U), dact(V), weights)
    return value.reshape(shape), derivative.reshape(shape)


def gaussian_expectations(activation: str, q, q_p, c, nodes: int | None = None):
    """(K, Kdot) at covariances (q, q_p, c): closed form where one exists, else quadrature."""
    if activation not in CLOSED_FORM:
        return gauss_hermite_expectations(activation, q, q_p, c, nodes)
    q, q_p, c = np.broadcast_arrays(*(np.asarray(t, dtype=np.float64) for t in (q, q_p, c)))
    bound = np.sqrt(q * q_p)
    degenerate = bound == 0.0   # u or v is 0 for every unit: c = 0 and rho is arbitrary
    rho = np.clip(np.divide(c, bound, out=np.zeros_like(c), where=~degenerate), -1.0, 1.0)
    value_fn, derivative_fn = closed_form_functions(activation)
    value, derivative = value_fn(q, q_p, rho), derivative_fn(q, q_p, rho)
    if activation == "relu":
        # relu(0) = relu'(0) = 0, while the arc-cosine form of Kdot would give 1/4 at rho = 0.
        value, derivative = np.where(degenerate, 0.0, value), np.where(degenerate, 0.0, derivative)
    return value, derivative


@dataclasses.dataclass(frozen=True)
class InitKernels:
    """Kernels of a ``SimpleNet`` at initialisation on inputs x1 [K1, D] x x2 [K2, D]."""

    ntk: np.ndarray     # E Theta(x1, x2): the infinite-width NTK for "ntk" scaling
    nngp: np.ndarray    # E f(x1) f(x2) = sigma_a^2 K
    value: np.ndarray   # K
    derivative: np.ndarray  # Kdot


def pre_activation_covariances(model, x1, x2):
    """(q(x1) [K1, 1], q(x2) [1, K2], c [K1, K2]) for the model's init distribution."""
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    bias_var = model.bias_std ** 2 if model.hidden_bias else 0.0
    w_var = model.weight_std ** 2 / model.input_dim
    q1 = w_var * np.sum(x1 * x1, axis=1)[:, None] + bias_var
    q2 = w_var * np.sum(x2 * x2, axis=1)[None, :] + bias_var
    return q1, q2, w_var * (x1 @ x2.T) + bias_var


def init_kernels(model, x1, x2, nodes: int | None = None) -> InitKernels:
    """Expected NTK and output covariance of ``model`` at initialisation (see the module docstring)."""
    q1, q2, cov = pre_activation_covariances(model, x1, x2)
    value, derivative = gaussian_expectations(model.activation, q1, q2, cov, nodes)
    dot = np.asarray(x1, dtype=np.float64) @ np.asarray(x2, dtype=np.float64).T
    s2n = 1.0 if model.scaling == "ntk" else float(model.width)
    ntk = (model.output_std ** 2 * (dot + float(model.hidden_bias)) * derivative + s2n * value
           + float(model.output_bias))
    return InitKernels(ntk=ntk, nngp=model.output_std ** 2 * value, value=value, derivative=derivative)


def init_ntk_expression(arch, activation_kernels: GaussianKernels | None = None):
    """E Theta(x, x') at init as a SymPy expression in (q, q_p, c, x.x') and the init scales."""
    k = activation_kernels or gaussian_kernels(arch.activation)
    s2n = sympy.Integer(1) if arch.scaling == "ntk" else N_sym
    return (sigma_a ** 2 * (sym.dot + int(arch.hidden_bias)) * k.explicit(k.derivative) + s2n * k.explicit(k.value)
            + int(arch.output_bias))
