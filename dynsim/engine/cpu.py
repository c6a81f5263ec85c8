"""The CPU backend: replicas in parallel (blocks on threads, ``dynsim.parallel``), each replica's steps in sequence.

Replicas never share state and every random draw is keyed by (seed, replica, step), so results
are bit-identical whatever the number of threads or their scheduling.
"""
import math

import numpy as np
from numba import njit

from ..integrators import SDE_CODE, TI_METHOD, TI_N_XI, TI_SAMPLING
from ..integrators.deep import deep_discrete_step, deep_sde_step
from .. import simd
from ..integrators.discrete import (batch_step, batch_step_lanes, discrete_step_outputs, is_single_sample,
                                   lanes_step_supported, single_sample_step, single_sample_step_lanes)
from ..integrators.sde import WORK_ROWS, sde_step
from ..models.deep import L_FAN_OUT, L_OUT
from ..models.simple import MI_DIM, MI_INPUT_DIM, MI_OUTPUTS, MI_WIDTH
from ..observables import measure
from ..parallel import over_replicas, replica_kernel

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


# Each kernel advances a block of replicas [r0, r1) serially; ``parallel.over_replicas`` runs the
# blocks on threads. One kernel per step function, so that a run compiles only the step it takes:
# the fused single-sample SGD step, the batch step, the SDE step, M outputs, the deep MLP.
@replica_kernel
def _advance_single_sample(r0, r1, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """Advance replicas r0..r1 from step s0 to s1 in place (SGD, one example per step); flag non-finite ones."""
    width, dim, n_train = mi[MI_WIDTH], mi[MI_DIM], x.shape[0]
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    # scratch in the parameters' precision (run.precision): float32 runs compute in float32
    z = np.empty(width, dtype=params.dtype)
    h = np.empty(width, dtype=params.dtype)
    perm = np.empty(n_perm, dtype=np.int64)
    perm_epoch = np.empty(1, dtype=np.int64)
    for r in range(r0, r1):
        if status[r] != STATUS_OK:
            continue
        perm_epoch[0] = -1  # no epoch permutation drawn yet for this replica
        theta = params[r]
        for s in range(s0, s1):
            if not single_sample_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, perm, perm_epoch):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


@njit(cache=True, error_model="numpy", inline="always")
def _enter_block(params, first, block, status, s0, resume):
    """Copy the replicas first.. of a block into its lanes; False (and every live one handed back from
    s0) when one of them is not live."""
    lanes = simd.lane_count(block)
    live = True
    for lane in range(lanes):
        live = live and status[first + lane] == STATUS_OK
    if not live:
        for lane in range(lanes):
            if status[first + lane] == STATUS_OK:
                resume[first + lane] = s0
        return False
    for j in range(params.shape[1]):
        for lane in range(lanes):
            block[j * lanes + lane] = params[first + lane, j]
    return True


@njit(cache=True, error_model="numpy", inline="always")
def _leave_block(params, first, block, failed, s, s1, status, failed_step, resume):
    """Copy the lanes back; flag the lanes of the bit mask ``failed`` as diverged at step s and hand the
    others back from s, or, after a whole run (failed = 0), flag the non-finite ones."""
    lanes = simd.lane_count(block)
    dim = params.shape[1]
    for j in range(dim):
        for lane in range(lanes):
            params[first + lane, j] = block[j * lanes + lane]
    for lane in range(lanes):
        if failed & (1 << lane):
            status[first + lane] = STATUS_NONFINITE
            failed_step[first + lane] = s
        elif failed:
            resume[first + lane] = s
        else:
            _flag_nonfinite(params[first + lane], dim, first + lane, s1, status, failed_step)


# The lane-blocked kernels advance the blocks b0..b1 of L replicas (b L .. b L + L - 1, L =
# ``simd.lane_count``), each block in the lanes of SIMD vectors (``integrators.discrete``'s
# ``*_lanes`` steps). A block with a replica that is not live, or in which a replica diverges, is
# handed back: its parameters are written back as they are at that step, the diverged replicas
# flagged, and every other live replica gets ``resume[r]`` = the step from which the one-replica
# kernel continues it. Plain njit, not ``replica_kernel``: through the parallel pipeline their
# vector code ran at 0.6x.
@njit(cache=True, error_model="numpy", nogil=True)
def _advance_single_sample_lanes(b0, b1, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step, resume):
    """``_advance_single_sample`` by blocks of replicas in SIMD lanes."""
    lanes = simd.lane_count(params[0])
    n_perm = x.shape[0] if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    block = np.empty(params.shape[1] * lanes, dtype=params.dtype)
    xs = np.empty(mi[MI_INPUT_DIM] * lanes, dtype=params.dtype)
    h = np.empty(mi[MI_WIDTH] * lanes, dtype=params.dtype)
    mu = np.empty(lanes, dtype=np.int64)
    perm = np.empty((lanes, n_perm), dtype=np.int64)
    perm_epoch = np.empty(lanes, dtype=np.int64)
    for b in range(b0, b1):
        first = b * lanes
        if not _enter_block(params, first, block, status, s0, resume):
            continue
        perm_epoch[:] = -1  # no epoch permutation drawn yet for these replicas
        failed, s = 0, s0
        for s in range(s0, s1):
            failed = single_sample_step_lanes(block, xs, h, x, y, mi, mf, ti, tf, seed, first, s, mu, perm, perm_epoch)
            if failed:
                break
        _leave_block(params, first, block, failed, s, s1, status, failed_step, resume)


@njit(cache=True, error_model="numpy", nogil=True)
def _advance_batch_lanes(b0, b1, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step, resume):
    """``_advance_batch`` by blocks of replicas in SIMD lanes."""
    lanes = simd.lane_count(params[0])
    n_perm = x.shape[0] if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    block = np.empty(params.shape[1] * lanes, dtype=params.dtype)
    grad = np.empty(params.shape[1] * lanes, dtype=params.dtype)
    xs = np.empty(mi[MI_INPUT_DIM] * lanes, dtype=params.dtype)
    h = np.empty(mi[MI_WIDTH] * lanes, dtype=params.dtype)
    xs2 = np.empty(mi[MI_INPUT_DIM] * lanes, dtype=params.dtype)  # the second sample of each pair
    h2 = np.empty(mi[MI_WIDTH] * lanes, dtype=params.dtype)
    mu = np.empty(lanes, dtype=np.int64)
    perm = np.empty((lanes, n_perm), dtype=np.int64)
    perm_epoch = np.empty(lanes, dtype=np.int64)
    for b in range(b0, b1):
        first = b * lanes
        if not _enter_block(params, first, block, status, s0, resume):
            continue
        perm_epoch[:] = -1
        failed, s = 0, s0
        for s in range(s0, s1):
            failed = batch_step_lanes(block, grad, xs, h, xs2, h2, x, y, mi, mf, ti, tf, seed, first, s, mu, perm,
                                      perm_epoch)
            if failed:
                break
        _leave_block(params, first, block, failed, s, s1, status, failed_step, resume)


def _advance_lanes(kernel, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """Every live replica advanced by the lane-blocked form of ``kernel``, L at a time; the replicas
    beyond the last whole block, and those a block hands back, continue one by one in ``kernel``."""
    lanes = simd.LANES[params.dtype]
    replicas = params.shape[0]
    whole = replicas - replicas % lanes
    resume = np.full(replicas, -1, dtype=np.int64)
    over_replicas(_LANE_KERNELS[kernel], whole // lanes, params, x, y, mi, mf, ti, tf, seed, s0, s1, status,
                  failed_step, resume)
    if whole < replicas:
        over_replicas(kernel, replicas, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step, start=whole)
    for r in np.flatnonzero(resume >= 0):
        over_replicas(kernel, r + 1, params, x, y, mi, mf, ti, tf, seed, int(resume[r]), s1, status, failed_step,
                      start=r)


@replica_kernel
def _advance_batch(r0, r1, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """The same for full-batch and mini-batch steps (GD, SGD with B > 1, Langevin)."""
    width, dim, n_train = mi[MI_WIDTH], mi[MI_DIM], x.shape[0]
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    z = np.empty(width, dtype=params.dtype)
    h = np.empty(width, dtype=params.dtype)
    g = np.empty(dim, dtype=params.dtype)
    perm = np.empty(n_perm, dtype=np.int64)
    perm_epoch = np.empty(1, dtype=np.int64)
    for r in range(r0, r1):
        if status[r] != STATUS_OK:
            continue
        perm_epoch[0] = -1
        theta = params[r]
        for s in range(s0, s1):
            if not batch_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, g, perm, perm_epoch):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


# the one-replica kernels that have a lane-blocked form, and that form
_LANE_KERNELS = {_advance_single_sample: _advance_single_sample_lanes, _advance_batch: _advance_batch_lanes}


@replica_kernel
def _advance_outputs(r0, r1, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """The discrete trainers for M > 1 outputs (y flat [P * M]); float64."""
    width, dim, n_train, n_out = mi[MI_WIDTH], mi[MI_DIM], x.shape[0], mi[MI_OUTPUTS]
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    z = np.empty(width)
    h = np.empty(width)
    g = np.empty(dim)
    f = np.empty(n_out)
    coefs = np.empty(n_out)
    perm = np.empty(n_perm, dtype=np.int64)
    perm_epoch = np.empty(1, dtype=np.int64)
    for r in range(r0, r1):
        if status[r] != STATUS_OK:
            continue
        perm_epoch[0] = -1
        theta = params[r]
        for s in range(s0, s1):
            if not discrete_step_outputs(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, g, f, coefs, perm,
                                         perm_epoch):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


@replica_kernel
def _advance_sde(r0, r1, params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """The same for the continuous-time trainer (``integrators.sde``)."""
    width, dim = mi[MI_WIDTH], mi[MI_DIM]
    z = np.empty(width)
    h = np.empty(width)
    xi = np.empty(ti[TI_N_XI])
    work = np.empty((WORK_ROWS, dim))
    for r in range(r0, r1):
        if status[r] != STATUS_OK:
            continue
        theta = params[r]
        for s in range(s0, s1):
            if not sde_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, xi, work):
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        _flag_nonfinite(theta, dim, r, s1, status, failed_step)


# One kernel for every deep-MLP trainer (a branch per step): its steps are called, not inlined.
@replica_kernel
def _advance_deep(r0, r1, params, x, labels, layers, act, ti, tf, seed, s0, s1, status, failed_step):
    """Every trainer for the deep MLP (``dynsim.models.deep``): labels int64 class indices."""
    dim = params.shape[1]
    n_train = x.shape[0]
    n_units = layers[layers.shape[0] - 1, L_OUT] + layers[layers.shape[0] - 1, L_FAN_OUT]
    classes = layers[layers.shape[0] - 1, L_FAN_OUT]
    sde = ti[TI_METHOD] == SDE_CODE
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    pre = np.empty(n_units)
    post = np.empty(n_units)
    delta = np.empty(n_units)
    prob = np.empty(classes)
    g = np.empty(0 if sde else dim)
    perm = np.empty(n_perm, dtype=np.int64)
    perm_epoch = np.empty(1, dtype=np.int64)
    xi = np.empty(ti[TI_N_XI] if sde else 0)
    work = np.empty((WORK_ROWS if sde else 0, dim))
    for r in range(r0, r1):
        if status[r] != STATUS_OK:
            continue
        perm_epoch[0] = -1
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


def advance_deep(params, x, labels, layers, act, ti, tf, seed, s0, s1, status, failed_step):
    """Advance every live deep-MLP replica from s0 to s1 (see ``_advance_deep``), blocks on threads."""
    over_replicas(_advance_deep, params.shape[0], params, x, labels, layers, act, ti, tf, seed, s0, s1, status,
                  failed_step)


def advance_kernel(mi, ti):
    """The compiled advance kernel of a simple-network run's model and trainer arrays."""
    if mi[MI_OUTPUTS] > 1:  # config validation keeps these runs float64 and discrete
        return _advance_outputs
    if ti[TI_METHOD] == SDE_CODE:
        return _advance_sde
    return _advance_single_sample if is_single_sample(ti) else _advance_batch


class CpuBackend:
    name = "cpu"
    device = "cpu"

    def advance(self, params, data, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
        kernel = advance_kernel(mi, ti)
        # the training data in the parameters' precision (no copy for float64); targets flat [P * M]
        x = np.ascontiguousarray(data.x_train, dtype=params.dtype)
        y = np.ascontiguousarray(data.y_train, dtype=params.dtype).reshape(-1)
        if kernel in _LANE_KERNELS and lanes_step_supported(mi, ti, tf):
            _advance_lanes(kernel, params, x, y, mi, mf, ti, tf, np.uint64(seed), s0, s1, status, failed_step)
            return
        over_replicas(kernel, params.shape[0], params, x, y, mi, mf, ti, tf, np.uint64(seed), s0, s1, status,
                      failed_step)

    def measure(self, params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility=(0, 1.0, 0.1)):
        measure(params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility)
