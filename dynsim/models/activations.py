"""Activation functions and their derivatives as compiled scalar kernels.

Kernels select an activation by an integer code (one compiled kernel serves every activation; the
branch is loop-invariant, so LLVM hoists it). ``ACTIVATIONS`` maps names to codes and is the only
place the names are listed. The symbolic definitions in ``dynsim.theory`` are tested against these
at seeded points.
"""
import math

from numba import njit

ACTIVATIONS = {"linear": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "erf": 4, "softplus": 5}
LINEAR, RELU, TANH, SIGMOID, ERF, SOFTPLUS = range(6)

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@njit(cache=True, inline="always")
def _sigmoid(z):
    # Branch on the sign so that exp never overflows.
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@njit(cache=True, inline="always")
def activate(z, code):
    """sigma(z) for the activation ``code``."""
    if code == TANH:
        return math.tanh(z)
    if code == RELU:
        return z if z > 0.0 else 0.0
    if code == LINEAR:
        return z
    if code == SIGMOID:
        return _sigmoid(z)
    if code == ERF:
        return math.erf(z)
    # softplus, written as max(z, 0) + log1p(exp(-|z|)) to stay finite for large |z|
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@njit(cache=True, inline="always")
def activate_derivative(z, code):
    """sigma'(z) for the activation ``code`` (relu'(0) = 0 by convention)."""
    if code == TANH:
        t = math.tanh(z)
        return 1.0 - t * t
    if code == RELU:
        return 1.0 if z > 0.0 else 0.0
    if code == LINEAR:
        return 1.0
    if code == SIGMOID:
        s = _sigmoid(z)
        return s * (1.0 - s)
    if code == ERF:
        return _TWO_OVER_SQRT_PI * math.exp(-z * z)
    return _sigmoid(z)  # softplus' = sigmoid


@njit(cache=True, inline="always")
def derivative_from_value(z, h, code):
    """sigma'(z) given h = sigma(z) as well: saves re-evaluating the transcendental in the hot loop."""
    if code == TANH:
        return 1.0 - h * h
    if code == RELU:
        return 1.0 if z > 0.0 else 0.0
    if code == LINEAR:
        return 1.0
    if code == SIGMOID:
        return h * (1.0 - h)
    if code == ERF:
        return _TWO_OVER_SQRT_PI * math.exp(-z * z)
    return -math.expm1(-h)  # softplus: sigmoid(z) = 1 - exp(-softplus(z))


@njit(cache=True, inline="always")
def activate_second_derivative(z, code):
    """sigma''(z) (zero for the piecewise-linear ones away from the kink)."""
    if code == TANH:
        t = math.tanh(z)
        return -2.0 * t * (1.0 - t * t)
    if code == RELU or code == LINEAR:
        return 0.0
    if code == SIGMOID:
        s = _sigmoid(z)
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    if code == ERF:
        return -2.0 * z * _TWO_OVER_SQRT_PI * math.exp(-z * z)
    s = _sigmoid(z)
    return s * (1.0 - s)
