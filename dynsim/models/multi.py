"""Kernels of the simple network with M > 1 outputs sharing its hidden layer (``SimpleNet.outputs``).

    f_m(x) = s sum_i a[m, i] sigma(z_i) + c_m,    z = W^T x + b

Parameters are packed as for one output with ``a`` [outputs, width] and ``c`` [outputs] (C order,
``param_layout`` says so). These kernels are separate from the one-output ones, which stay exactly
as they were (and are compiled only for runs that need them): every kernel of a one-output run is
unchanged by the existence of this module.
"""
import numpy as np
from numba import njit

from .activations import derivative_layer
from .simple import (MF_OUTPUT_SCALE, MI_ACTIVATION, MI_INPUT_DIM, MI_OFF_A, MI_OFF_B, MI_OFF_C, MI_OUTPUTS,
                     MI_WIDTH, hidden_layer, output_sum)


# Called, not inlined (no inline="always" as the one-output kernels have): the M-output kernels call
# these from several places, and inlining each call had made their compilation take minutes.
@njit(cache=True, error_model="numpy")
def forward_outputs(theta, x, mi, mf, z, h, out):
    """out[m] = f_m(x; theta) for every output; fills z (pre-activations) and h (activations)."""
    width, off_a, off_c, n_out = mi[MI_WIDTH], mi[MI_OFF_A], mi[MI_OFF_C], mi[MI_OUTPUTS]
    hidden_layer(theta, x, mi, z, h)
    scale = mf[MF_OUTPUT_SCALE]
    for m in range(n_out):
        out[m] = scale * output_sum(theta, off_a + m * width, h, width)
        if off_c >= 0:
            out[m] += theta[off_c + m]


@njit(cache=True, error_model="numpy")
def add_gradient_outputs(theta, x, mi, mf, z, h, coefs, g):
    """g += sum_m coefs[m] d f_m(x) / d theta, using z, h from ``forward_outputs`` at (theta, x).

    Overwrites z with the back-propagated pre-activation gradient.
    """
    act, n_in, width = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH]
    off_b, off_a, off_c, n_out = mi[MI_OFF_B], mi[MI_OFF_A], mi[MI_OFF_C], mi[MI_OUTPUTS]
    scale = mf[MF_OUTPUT_SCALE]
    derivative_layer(z, h, width, act)
    for i in range(width):
        back = 0.0
        for m in range(n_out):
            back += coefs[m] * theta[off_a + m * width + i]
        z[i] *= scale * back
    for m in range(n_out):
        cs = scale * coefs[m]
        row = off_a + m * width
        for i in range(width):
            g[row + i] += cs * h[i]
    for d in range(n_in):
        xd = x[d]
        row = d * width
        for i in range(width):
            g[row + i] += z[i] * xd
    if off_b >= 0:
        for i in range(width):
            g[off_b + i] += z[i]
    if off_c >= 0:
        for m in range(n_out):
            g[off_c + m] += coefs[m]


def evaluate_outputs(model, theta, x) -> np.ndarray:
    """[K, M]: every output at every row of x, for one parameter vector."""
    ints, floats = model.kernel_arrays()
    out = np.empty((x.shape[0], model.outputs))
    _evaluate(np.ascontiguousarray(theta, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float64), ints,
              floats, out)
    return out


def output_jacobians(model, theta, x) -> np.ndarray:
    """[K, M, n_params]: d f_m(x_k) / d theta for one parameter vector (tests, analysis)."""
    ints, floats = model.kernel_arrays()
    out = np.zeros((x.shape[0], model.outputs, model.n_params))
    _jacobians(np.ascontiguousarray(theta, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float64), ints,
               floats, out)
    return out


@njit(cache=True, error_model="numpy")
def _evaluate(theta, x, mi, mf, out):
    z = np.empty(mi[MI_WIDTH])
    h = np.empty(mi[MI_WIDTH])
    for k in range(x.shape[0]):
        forward_outputs(theta, x[k], mi, mf, z, h, out[k])


@njit(cache=True, error_model="numpy")
def _jacobians(theta, x, mi, mf, out):
    n_out = mi[MI_OUTPUTS]
    z = np.empty(mi[MI_WIDTH])
    h = np.empty(mi[MI_WIDTH])
    f = np.empty(n_out)
    coefs = np.zeros(n_out)
    for k in range(x.shape[0]):
        for m in range(n_out):
            forward_outputs(theta, x[k], mi, mf, z, h, f)
            coefs[:] = 0.0
            coefs[m] = 1.0
            add_gradient_outputs(theta, x[k], mi, mf, z, h, coefs, out[k, m])
