"""Activation functions and their derivatives as compiled scalar kernels.

Kernels select an activation by an integer code (one compiled kernel serves every activation; the
branch is loop-invariant, so LLVM hoists it). ``ACTIVATIONS`` maps names to codes and is the only
place the names are listed. The symbolic definitions in ``dynsim.theory`` are tested against these
at seeded points.
"""
import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .. import simd

# Compiled with error_model="numpy": a division by zero gives inf/nan (caught by the divergence
# check) instead of raising, which removes a branch per division and lets loops vectorise.
ACTIVATIONS = {"linear": 0, "relu": 1, "tanh": 2, "sigmoid": 3, "erf": 4, "softplus": 5}
LINEAR, RELU, TANH, SIGMOID, ERF, SOFTPLUS = range(6)

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


@njit(cache=True, error_model="numpy", inline="always")
def _sigmoid(z):
    # Branch on the sign so that exp never overflows.
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


# Taylor coefficients 1/k! of expm1, k = 2..17, for ``fast_tanh``.
_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13, _E14, _E15, _E16, _E17 = (
    1.0 / math.factorial(k) for k in range(2, 18))


@njit(cache=True, error_model="numpy", inline="always")
def fast_tanh(z):
    """tanh(z) to within 5 ulp, branch-free so that loops over it vectorise (libm's does not).

    expm1(2|z|/64) by its Taylor series (|argument| <= 0.6, 17 terms: truncation below 1e-18
    relative), then six exact-form doublings expm1(2u) = expm1(u) (expm1(u) + 2), which involve no
    cancellation, and tanh = expm1(2a) / (expm1(2a) + 2). |z| is clamped at 19, beyond which
    tanh is 1 to double precision. The series is evaluated by Estrin's scheme (pairs, then
    powers y^2, y^4, y^8) rather than Horner's: its dependency chain is 8 operations deep
    instead of 34, which made a vectorised tanh 1.4x faster (6.6 -> 4.6 ns per value, 2-core EPYC).
    Measured: max relative error 1.1e-15 (5 ulp) against libm over [-25, 25] and down to |z| = 1e-12
    (tests/test_core_kernels.py).
    """
    a = min(abs(z), 19.0)
    y = a * (2.0 / 64.0)
    y2 = y * y
    y4 = y2 * y2
    y8 = y4 * y4
    # expm1(y) = y + y^2 q(y), q = sum_{k=2..17} y^(k-2) / k!; the leading y is added last, exactly
    q0 = (_E2 + _E3 * y) + (_E4 + _E5 * y) * y2
    q1 = (_E6 + _E7 * y) + (_E8 + _E9 * y) * y2
    q2 = (_E10 + _E11 * y) + (_E12 + _E13 * y) * y2
    q3 = (_E14 + _E15 * y) + (_E16 + _E17 * y) * y2
    e = y + ((q0 + q1 * y4) + (q2 + q3 * y4) * y8) * y2
    e = e * (e + 2.0)
    e = e * (e + 2.0)
    e = e * (e + 2.0)
    e = e * (e + 2.0)
    e = e * (e + 2.0)
    e = e * (e + 2.0)
    t = e / (e + 2.0)
    return t if z >= 0.0 else -t


# float32 constants of ``fast_tanh32``: a float64 literal would promote its arithmetic to float64.
_F2, _F3, _F4, _F5, _F6, _F7, _F8 = (np.float32(1.0 / math.factorial(k)) for k in range(2, 9))
_F_CLAMP, _F_SCALE, _F_TWO = np.float32(9.0), np.float32(2.0 / 64.0), np.float32(2.0)


@njit(cache=True, error_model="numpy", inline="always")
def fast_tanh32(z):
    """tanh for float32 arithmetic (``run.precision = "float32"``): ``fast_tanh`` with 7 series terms.

    Same construction as ``fast_tanh``: expm1(y), y = 2|z|/64 <= 0.28 (|z| clamped at 9, where tanh
    is 1 in float32), by y + y^2 q(y) with q to y^6/8! (truncation 1e-10 relative), six exact-form
    doublings, e / (e + 2). Every operation is float32, so a vector holds 8 values instead of 4.
    Measured: within 4 float32 ulp of libm's tanh (tests/test_core_kernels.py).
    """
    a = min(abs(z), _F_CLAMP)
    y = a * _F_SCALE
    y2 = y * y
    y4 = y2 * y2
    e = y + (((_F2 + _F3 * y) + (_F4 + _F5 * y) * y2) + ((_F6 + _F7 * y) + _F8 * y2) * y4) * y2
    e = e * (e + _F_TWO)
    e = e * (e + _F_TWO)
    e = e * (e + _F_TWO)
    e = e * (e + _F_TWO)
    e = e * (e + _F_TWO)
    e = e * (e + _F_TWO)
    t = e / (e + _F_TWO)
    return t if z >= 0 else -t


@njit(cache=True, error_model="numpy", inline="always")
def activate(z, code):
    """sigma(z) for the activation ``code``."""
    if code == TANH:
        return fast_tanh(z)
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


@njit(cache=True, error_model="numpy", inline="always")
def activate_derivative(z, code):
    """sigma'(z) for the activation ``code`` (relu'(0) = 0 by convention)."""
    if code == TANH:
        t = fast_tanh(z)
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


@njit(cache=True, error_model="numpy", inline="always")
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


@njit(cache=True, error_model="numpy", inline="always")
def activate_second_derivative(z, code):
    """sigma''(z) (zero for the piecewise-linear ones away from the kink)."""
    if code == TANH:
        t = fast_tanh(z)
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


def tanh_layer(z, h, n):
    """h[i] = tanh(z[i]) for i < n: ``fast_tanh32`` for float32 arrays, ``fast_tanh`` otherwise.

    The choice is made when a kernel is compiled (the overload below), not at run time: every
    kernel inlines the layer activation at several places, and carrying both loops in each of them
    made the cold compile of the test suite 40 % longer. This Python body is what runs without
    compilation (NUMBA_DISABLE_JIT).
    """
    tanh = fast_tanh32 if z.dtype == np.float32 else fast_tanh
    for i in range(n):
        h[i] = tanh(z[i])


@overload(tanh_layer, target="generic", jit_options=dict(error_model="numpy"))
def _tanh_layer_compiled(z, h, n):
    if z.dtype == types.float32:
        def float32_layer(z, h, n):
            for i in range(n):
                h[i] = fast_tanh32(z[i])
        return float32_layer

    def float64_layer(z, h, n):
        for i in range(n):
            h[i] = fast_tanh(z[i])
    return float64_layer


@njit(cache=True, error_model="numpy", inline="always")
def activate_layer(z, h, n, code):
    """h[i] = sigma(z[i]) for i < n, with the branch on ``code`` outside the loops (they vectorise)."""
    if code == TANH:
        tanh_layer(z, h, n)
    elif code == RELU:
        for i in range(n):
            h[i] = max(z[i], 0.0)
    elif code == LINEAR:
        for i in range(n):
            h[i] = z[i]
    else:
        _activate_layer_other(z, h, n, code)


# The layers of the other activations are called, not inlined: one call per layer costs nothing
# next to its transcendental functions, and keeps their code out of every kernel that inlines the
# layer (a kernel's cold compile time grows with the code inlined into it).
@njit(cache=True, error_model="numpy")
def _activate_layer_other(z, h, n, code):
    for i in range(n):
        h[i] = activate(z[i], code)


@njit(cache=True, error_model="numpy", inline="always")
def derivative_layer(z, h, n, code):
    """z[i] <- sigma'(z[i]) in place, given h[i] = sigma(z[i]); branch outside the loops."""
    if code == TANH:
        one = z.dtype.type(1.0)  # float32 runs: a float32 loop (a float64 literal would promote it)
        for i in range(n):
            z[i] = one - h[i] * h[i]
    elif code == RELU:
        for i in range(n):
            z[i] = 1.0 if z[i] > 0.0 else 0.0
    elif code == LINEAR:
        for i in range(n):
            z[i] = 1.0
    else:
        _derivative_layer_other(z, h, n, code)


@njit(cache=True, error_model="numpy")
def _derivative_layer_other(z, h, n, code):
    for i in range(n):
        z[i] = derivative_from_value(z[i], h[i], code)


# --- the same activations on SIMD vectors (``dynsim.simd``): lane by lane bit for bit the scalar ones ---

@njit(cache=True, error_model="numpy", inline="always")
def _tanh_from_expm1_lanes(z, e, two):
    """The shared tail of both lane tanhs: e = expm1(2|z| / 64) doubled six times to expm1(2|z|), then
    tanh|z| = e / (e + 2) with the sign of z, operation for operation the scalar code's."""
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    e = e * (e + two)
    t = e / (e + two)
    return simd.where_nonnegative(z, t, simd.negative(t))


@njit(cache=True, error_model="numpy", inline="always")
def _fast_tanh_lanes64(z):
    """``fast_tanh`` of every lane, operation for operation (so bit for bit)."""
    def c(value):
        return simd.splat(value, z)
    a = simd.minimum(simd.absolute(z), c(19.0))
    y = a * c(2.0 / 64.0)
    y2 = y * y
    y4 = y2 * y2
    y8 = y4 * y4
    q0 = (c(_E2) + c(_E3) * y) + (c(_E4) + c(_E5) * y) * y2
    q1 = (c(_E6) + c(_E7) * y) + (c(_E8) + c(_E9) * y) * y2
    q2 = (c(_E10) + c(_E11) * y) + (c(_E12) + c(_E13) * y) * y2
    q3 = (c(_E14) + c(_E15) * y) + (c(_E16) + c(_E17) * y) * y2
    e = y + ((q0 + q1 * y4) + (q2 + q3 * y4) * y8) * y2
    return _tanh_from_expm1_lanes(z, e, c(2.0))


@njit(cache=True, error_model="numpy", inline="always")
def _fast_tanh_lanes32(z):
    """``fast_tanh32`` of every lane, operation for operation."""
    def c(value):
        return simd.splat(value, z)
    a = simd.minimum(simd.absolute(z), c(_F_CLAMP))
    y = a * c(_F_SCALE)
    y2 = y * y
    y4 = y2 * y2
    e = y + (((c(_F2) + c(_F3) * y) + (c(_F4) + c(_F5) * y) * y2) + ((c(_F6) + c(_F7) * y) + c(_F8) * y2) * y4) * y2
    return _tanh_from_expm1_lanes(z, e, c(_F_TWO))


def fast_tanh_lanes(z):
    """tanh of every lane of a ``simd`` vector: ``fast_tanh`` (float64) or ``fast_tanh32`` (float32)."""
    raise NotImplementedError("fast_tanh_lanes runs compiled only")


@overload(fast_tanh_lanes, target="generic", inline="always", jit_options=dict(error_model="numpy"))
def _fast_tanh_lanes_compiled(z):
    if z.dtype == types.float32:
        return lambda z: _fast_tanh_lanes32(z)
    return lambda z: _fast_tanh_lanes64(z)


# The activations with a SIMD form; the others run the scalar kernels.
LANE_ACTIVATIONS = (TANH, RELU, LINEAR)


@njit(cache=True, error_model="numpy", inline="always")
def activate_lanes(z, code):
    """sigma of every lane for the codes of ``LANE_ACTIVATIONS`` (relu: ``max(z, 0.0)``, as ``activate_layer``)."""
    if code == TANH:
        return fast_tanh_lanes(z)
    if code == RELU:
        return simd.maximum(z, simd.splat(0.0, z))
    return z


@njit(cache=True, error_model="numpy", inline="always")
def derivative_lanes(h, code):
    """sigma' of every lane from h = sigma(z), as ``derivative_layer`` (relu: z > 0 exactly where h > 0)."""
    one = simd.splat(1.0, h)
    if code == TANH:
        return one - h * h
    if code == RELU:
        return simd.where_positive(h, one, simd.splat(0.0, h))
    return one
