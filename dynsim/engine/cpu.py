"""The CPU backend: replicas in parallel (``numba.prange``), each replica's steps in sequence.

Replicas never share state and every random draw is keyed by (seed, replica, step), so results
are bit-identical whatever the number of threads or their scheduling.
"""
import math

import numpy as np
from numba import njit, prange

from ..integrators import SDE_CODE, TI_METHOD, TI_N_XI, TI_SAMPLING
from ..integrators.deep import deep_discrete_step, deep_sde_step
from ..integrators.discrete import discrete_step, discrete_step_outputs
from ..integrators.sde import WORK_ROWS, sde_step
from ..models.deep import L_FAN_OUT, L_OUT
from ..models.simple import MI_DIM, MI_OUTPUTS, MI_WIDTH
from ..observables import measure

STATUS_OK = 0
STATUS_NONFINITE = 1

_WITHOUT_REPLACEMENT = 2


@njit(cache=True, error_model="numpy", inline="always")
def _flag_nonfinite(theta, dim, r, s1, status, failed_step):
    if status[r] == STATUS_OK:
        for j in range(dim):
            if not math.isfinite(theta[j]):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s1
                break


# Two kernels rather than one with a branch: each is compiled only when a run needs it, and
# compile time grows faster than linearly with the size of an inlined prange body.
@njit(cache=True, error_model="numpy", parallel=True)
def _advance(params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """Advance every live replica from step s0 to s1 in place (discrete trainers); flag non-finite ones."""
    replicas = params.shape[0]
    width, dim, n_train = mi[MI_WIDTH], mi[MI_DIM], x.shape[0]
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    for r in prange(replicas):
        if status[r] != STATUS_OK:
            continue
        # scratch in the parameters' precision (run.precision): float32 runs compute in float32
        z = np.empty(width, dtype=params.dtype)
        h = np.empty(width, dtype=params.dtype)
        g = np.empty(dim, dtype=params.dtype)
        perm = np.empty(n_perm, dtype=np.int64)
        perm_epoch = np.full(1, -1, dtype=np.int64)
        theta = params[r]
        for s in range(s0, s1):
            if not discrete_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, g, perm, perm_epoch):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


@njit(cache=True, error_model="numpy", parallel=True)
def _advance_outputs(params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """The discrete trainers for M > 1 outputs (y flat [P * M]); float64."""
    replicas = params.shape[0]
    width, dim, n_train, n_out = mi[MI_WIDTH], mi[MI_DIM], x.shape[0], mi[MI_OUTPUTS]
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    for r in prange(replicas):
        if status[r] != STATUS_OK:
            continue
        z = np.empty(width)
        h = np.empty(width)
        g = np.empty(dim)
        f = np.empty(n_out)
        coefs = np.empty(n_out)
        perm = np.empty(n_perm, dtype=np.int64)
        perm_epoch = np.full(1, -1, dtype=np.int64)
        theta = params[r]
        for s in range(s0, s1):
            if not discrete_step_outputs(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, g, f, coefs, perm,
                                         perm_epoch):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


@njit(cache=True, error_model="numpy", parallel=True)
def _advance_sde(params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """The same for the continuous-time trainer (``integrators.sde``)."""
    replicas = params.shape[0]
    width, dim = mi[MI_WIDTH], mi[MI_DIM]
    for r in prange(replicas):
        if status[r] != STATUS_OK:
            continue
        z = np.empty(width)
        h = np.empty(width)
        xi = np.empty(ti[TI_N_XI])
        work = np.empty((WORK_ROWS, dim))
        theta = params[r]
        for s in range(s0, s1):
            if not sde_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, xi, work):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


# One parallel kernel for every deep-MLP trainer (a branch per step, not two kernels): the parallel
# machinery costs ~9 s of compile time per kernel, more than the SDE step itself.
@njit(cache=True, error_model="numpy", parallel=True)
def _advance_deep(params, x, labels, layers, act, ti, tf, seed, s0, s1, status, failed_step):
    """Every trainer for the deep MLP (``dynsim.models.deep``): labels int64 class indices."""
    replicas, dim = params.shape
    n_train = x.shape[0]
    n_units = layers[layers.shape[0] - 1, L_OUT] + layers[layers.shape[0] - 1, L_FAN_OUT]
    classes = layers[layers.shape[0] - 1, L_FAN_OUT]
    sde = ti[TI_METHOD] == SDE_CODE
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    for r in prange(replicas):
        if status[r] != STATUS_OK:
            continue
        pre = np.empty(n_units)
        post = np.empty(n_units)
        delta = np.empty(n_units)
        prob = np.empty(classes)
        g = np.empty(0 if sde else dim)
        perm = np.empty(n_perm, dtype=np.int64)
        perm_epoch = np.full(1, -1, dtype=np.int64)
        xi = np.empty(ti[TI_N_XI] if sde else 0)
        work = np.empty((WORK_ROWS if sde else 0, dim))
        theta = params[r]
        for s in range(s0, s1):
            if sde:
                ok = deep_sde_step(theta, x, labels, layers, act, ti, tf, seed, r, s, pre, post, delta, prob, xi, work)
            else:
                ok = deep_discrete_step(theta, x, labels, layers, act, ti, tf, seed, r, s, pre, post, delta, prob, g,
                                        perm, perm_epoch)
            if not ok:
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


class CpuBackend:
    name = "cpu"
    device = "cpu"

    def advance(self, params, data, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
        kernel = _advance_sde if ti[TI_METHOD] == SDE_CODE else _advance
        if mi[MI_OUTPUTS] > 1:  # config validation keeps these runs float64 and discrete
            kernel = _advance_outputs
        # the training data in the parameters' precision (no copy for float64); targets flat [P * M]
        x = np.ascontiguousarray(data.x_train, dtype=params.dtype)
        y = np.ascontiguousarray(data.y_train, dtype=params.dtype).reshape(-1)
        kernel(params, x, y, mi, mf, ti, tf, np.uint64(seed), s0, s1, status, failed_step)

    def measure(self, params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility=(0, 1.0, 0.1)):
        measure(params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility)
