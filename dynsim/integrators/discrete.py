"""Compiled per-replica steps of the discrete-time trainers (GD, SGD, Langevin).

One step of replica ``replica`` at step number ``step``:

    g     = (1/B) sum_{mu in batch} l'(f(x_mu), y_mu) grad_theta f(x_mu)
    theta = theta - eta (g + lambda theta) + sqrt(2 eta T) xi

The batch is all samples (GD, Langevin without batch), B indices drawn independently (with
replacement) or the next B entries of an epoch-wise shuffle (without replacement). Every random
draw is addressed by (seed, replica, stream, step, index), see ``dynsim.rng``; the epoch shuffle is
recomputed from its epoch number, so a step depends only on theta and the step number.
"""
import math

from numba import njit

from .. import simd
from ..losses import loss_derivative
from ..models.multi import add_gradient_outputs, forward_outputs
from ..models.simple import (MF_OUTPUT_SCALE, MI_DIM, MI_INPUT_DIM, MI_OFF_C, MI_OUTPUTS, add_gradient,
                             add_gradient_lanes, add_gradient_pair_lanes, descend_lanes, descend_single_sample, forward,
                             forward_lanes, lanes_supported)
from ..rng import STREAM_BATCH, STREAM_NOISE, STREAM_PERMUTATION, fill_permutation, index_at, normal_pair
from . import TF_ETA, TF_NOISE_STD, TF_WEIGHT_DECAY, TI_BATCH, TI_LOSS, TI_SAMPLING

_FULL, _WITH_REPLACEMENT, _WITHOUT_REPLACEMENT = 0, 1, 2


@njit(cache=True, error_model="numpy", inline="always")
def _accumulate(theta, x, y, mu, mi, mf, loss_code, coef, z, h, g):
    """g += coef * l'(f(x_mu), y_mu) grad f(x_mu); returns l' (non-finite flags divergence)."""
    f = forward(theta, x[mu], mi, mf, z, h)
    dl = loss_derivative(f, y[mu], loss_code)
    add_gradient(theta, x[mu], mi, mf, z, h, coef * dl, g)
    return dl


@njit(cache=True, error_model="numpy", inline="always")
def _sample_index(seed, replica, step, b, batch, n_train, sampling, perm, perm_epoch):
    """Index of the b-th sample of the batch at ``step`` (sgd sampling modes only)."""
    if sampling == _WITH_REPLACEMENT:
        return index_at(seed, replica, STREAM_BATCH, step, b, n_train)
    position = step * batch + b
    epoch = position // n_train
    if epoch != perm_epoch[0]:
        fill_permutation(seed, replica, STREAM_PERMUTATION, epoch, perm)
        perm_epoch[0] = epoch
    return perm[position - epoch * n_train]


@njit(cache=True, error_model="numpy", inline="always")
def batch_member(seed, replica, step, b, batch, n_train, sampling, perm, perm_epoch):
    """Index of the b-th sample of the step's batch: b itself for full-batch steps."""
    if sampling == _FULL:
        return b
    return _sample_index(seed, replica, step, b, batch, n_train, sampling, perm, perm_epoch)


@njit(cache=True, error_model="numpy", inline="always")
def apply_update(theta, g, dim, tf, seed, replica, step):
    """theta <- (1 - eta lambda) theta - eta g, plus sqrt(2 eta T) xi: the update every discrete
    trainer applies once its batch gradient g is accumulated (in the parameters' precision)."""
    eta = tf[TF_ETA]
    # in the parameters' type: a float32 run keeps a float32 loop (a float64 scalar would promote it)
    decay_t, eta_t = theta.dtype.type(1.0 - eta * tf[TF_WEIGHT_DECAY]), theta.dtype.type(eta)
    for j in range(dim):
        theta[j] = decay_t * theta[j] - eta_t * g[j]
    noise = tf[TF_NOISE_STD]
    if noise > 0.0:
        _add_noise(theta, dim, noise, seed, replica, step)


# Called, not inlined: a Philox draw per pair of parameters outweighs the call.
@njit(cache=True, error_model="numpy")
def _add_noise(theta, dim, noise, seed, replica, step):
    for k in range((dim + 1) // 2):
        xi0, xi1 = normal_pair(seed, replica, STREAM_NOISE, step, k)
        theta[2 * k] += noise * xi0
        if 2 * k + 1 < dim:
            theta[2 * k + 1] += noise * xi1


def is_single_sample(trainer_ints) -> bool:
    """True when the trainer takes one sampled example per step (SGD, B = 1): ``single_sample_step``."""
    return trainer_ints[TI_BATCH] == 1 and trainer_ints[TI_SAMPLING] != _FULL


@njit(cache=True, error_model="numpy", inline="always")
def single_sample_step(theta, x, y, mi, mf, ti, tf, seed, replica, step, z, h, perm, perm_epoch):
    """One SGD step on one sampled example, gradient and update fused into one pass over the
    parameters (only for ``is_single_sample`` trainers); False if the loss gradient was not finite."""
    n_train = x.shape[0]
    sampling = ti[TI_SAMPLING]
    loss_code = ti[TI_LOSS]
    eta = tf[TF_ETA]
    decay = 1.0 - eta * tf[TF_WEIGHT_DECAY]
    noise = tf[TF_NOISE_STD]
    mu = _sample_index(seed, replica, step, 0, 1, n_train, sampling, perm, perm_epoch)
    f = forward(theta, x[mu], mi, mf, z, h)
    dl = loss_derivative(f, y[mu], loss_code)
    if not math.isfinite(dl):
        return False
    descend_single_sample(theta, x[mu], mi, mf, z, h, eta * dl, decay)
    if noise > 0.0:
        _add_noise(theta, mi[MI_DIM], noise, seed, replica, step)
    return True


def lanes_step_supported(mi, ti, tf) -> bool:
    """True when the lane-blocked steps (``single_sample_step_lanes``, ``batch_step_lanes``) serve the
    model: one of ``models.simple.lanes_supported``, any discrete trainer."""
    return lanes_supported(mi)


@njit(cache=True, error_model="numpy", inline="always")
def single_sample_step_lanes(block, xs, h, x, y, mi, mf, ti, tf, seed, first_replica, step, mu, perm, perm_epoch):
    """``single_sample_step`` for the replicas first_replica + l in the lanes l of ``block`` (layout in
    ``models.simple``); returns 0, or a bit mask of the lanes whose loss gradient was not finite, in
    which case no lane has moved."""
    lanes = simd.lane_count(block)
    n_train, n_in, off_c = x.shape[0], mi[MI_INPUT_DIM], mi[MI_OFF_C]
    sampling, loss_code = ti[TI_SAMPLING], ti[TI_LOSS]
    eta = tf[TF_ETA]
    decay = block.dtype.type(1.0 - eta * tf[TF_WEIGHT_DECAY])
    scale = mf[MF_OUTPUT_SCALE]
    _gather_samples(xs, x, seed, first_replica, step, 0, 1, sampling, mu, perm, perm_epoch)
    f = forward_lanes(block, xs, h, mi, mf)
    step_coef = f  # eta * l' per lane, in float64 as in the scalar step
    cs = simd.zeros(block)
    failed = 0
    for lane in range(lanes):
        f_lane = simd.lane(f, lane)
        if off_c >= 0:
            f_lane += block[off_c * lanes + lane]
        dl = loss_derivative(f_lane, y[mu[lane]], loss_code)
        if not math.isfinite(dl):
            failed |= 1 << lane
        step_coef = simd.with_lane(step_coef, lane, eta * dl)
        cs = simd.with_lane(cs, lane, block.dtype.type((eta * dl) * scale))
    if failed:
        return failed
    descend_lanes(block, xs, h, mi, cs, decay)
    if off_c >= 0:
        for lane in range(lanes):
            block[off_c * lanes + lane] = decay * block[off_c * lanes + lane] - simd.lane(step_coef, lane)
    _add_noise_lanes(block, mi[MI_DIM], tf[TF_NOISE_STD], seed, first_replica, step)
    return 0


@njit(cache=True, error_model="numpy", inline="always")
def _gather_samples(xs, x, seed, first_replica, step, b, batch, sampling, mu, perm, perm_epoch):
    """mu[l] = the b-th sample of replica first_replica + l's batch at ``step``; xs its inputs, lane-minor."""
    lanes = simd.lane_count(xs)
    n_train, n_in = x.shape
    if sampling == _FULL:  # every lane takes sample b: its inputs in every lane, no gather
        for lane in range(lanes):
            mu[lane] = b
        for d in range(n_in):
            simd.store(xs, d * lanes, simd.splat(x[b, d], simd.zeros(xs)))
        return
    if sampling == _WITH_REPLACEMENT:  # without the views below (their reference counts cost)
        for lane in range(lanes):
            mu[lane] = index_at(seed, first_replica + lane, STREAM_BATCH, step, b, n_train)
    else:
        for lane in range(lanes):
            mu[lane] = _sample_index(seed, first_replica + lane, step, b, batch, n_train, sampling, perm[lane],
                                     perm_epoch[lane:lane + 1])
    for d in range(n_in):
        xd = simd.zeros(xs)
        for lane in range(lanes):
            xd = simd.with_lane(xd, lane, x[mu[lane], d])
        simd.store(xs, d * lanes, xd)


@njit(cache=True, error_model="numpy", inline="always")
def _add_noise_lanes(block, dim, noise, seed, first_replica, step):
    """``_add_noise`` of each lane's replica: the same draws added to the same parameters."""
    if noise > 0.0:
        lanes = simd.lane_count(block)
        for lane in range(lanes):
            for k in range((dim + 1) // 2):
                xi0, xi1 = normal_pair(seed, first_replica + lane, STREAM_NOISE, step, k)
                block[2 * k * lanes + lane] += noise * xi0
                if 2 * k + 1 < dim:
                    block[(2 * k + 1) * lanes + lane] += noise * xi1


@njit(cache=True, error_model="numpy", inline="always")
def _sample_lanes(block, grad, xs, h, x, y, mi, mf, loss_code, coef, seed, first_replica, step, b, batch, sampling,
                  mu, perm, perm_epoch, dl_sums):
    """The b-th batch sample of every lane: its forward pass (h), loss derivative (added to dl_sums, which
    is returned) and output-bias gradient; returns also cs, each lane's coef * l' * output scale."""
    lanes = simd.lane_count(block)
    off_c = mi[MI_OFF_C]
    scale = mf[MF_OUTPUT_SCALE]
    _gather_samples(xs, x, seed, first_replica, step, b, batch, sampling, mu, perm, perm_epoch)
    f = forward_lanes(block, xs, h, mi, mf)
    cs = simd.zeros(block)
    for lane in range(lanes):
        f_lane = simd.lane(f, lane)
        if off_c >= 0:
            f_lane += block[off_c * lanes + lane]
        dl = loss_derivative(f_lane, y[mu[lane]], loss_code)
        dl_sums = simd.with_lane(dl_sums, lane, simd.lane(dl_sums, lane) + dl)
        cs = simd.with_lane(cs, lane, block.dtype.type((coef * dl) * scale))
        if off_c >= 0:
            grad[off_c * lanes + lane] += coef * dl
    return cs, dl_sums


@njit(cache=True, error_model="numpy", inline="always")
def batch_step_lanes(block, grad, xs, h, xs2, h2, x, y, mi, mf, ti, tf, seed, first_replica, step, mu, perm,
                     perm_epoch):
    """``batch_step`` for the replicas first_replica + l in the lanes l of ``block``, the batch gradient
    accumulated in ``grad`` (same layout); returns 0, or a bit mask of the lanes whose summed loss
    gradient was not finite, in which case no lane has moved. Samples go two at a time (xs2, h2 the
    second's), their gradients added to each element of ``grad`` in sample order: the same sums as one
    at a time, with half the loads and stores of ``grad``."""
    lanes = simd.lane_count(block)
    dim = mi[MI_DIM]
    n_train = x.shape[0]
    batch, sampling, loss_code = ti[TI_BATCH], ti[TI_SAMPLING], ti[TI_LOSS]
    zero = simd.zeros(block)
    for k in range(0, dim * lanes, lanes):
        simd.store(grad, k, zero)
    coef = 1.0 / batch
    count = n_train if sampling == _FULL else batch
    dl_sums = simd.widen(zero)
    for b in range(0, count - 1, 2):
        cs, dl_sums = _sample_lanes(block, grad, xs, h, x, y, mi, mf, loss_code, coef, seed, first_replica, step, b,
                                    batch, sampling, mu, perm, perm_epoch, dl_sums)
        cs2, dl_sums = _sample_lanes(block, grad, xs2, h2, x, y, mi, mf, loss_code, coef, seed, first_replica, step,
                                     b + 1, batch, sampling, mu, perm, perm_epoch, dl_sums)
        add_gradient_pair_lanes(block, xs, h, cs, xs2, h2, cs2, mi, grad)
    if count % 2:
        cs, dl_sums = _sample_lanes(block, grad, xs, h, x, y, mi, mf, loss_code, coef, seed, first_replica, step,
                                    count - 1, batch, sampling, mu, perm, perm_epoch, dl_sums)
        add_gradient_lanes(block, xs, h, mi, cs, grad)
    failed = 0
    for lane in range(lanes):
        if not math.isfinite(simd.lane(dl_sums, lane)):
            failed |= 1 << lane
    if failed:
        return failed
    # apply_update lane by lane: theta <- (1 - eta lambda) theta - eta g (in the parameters' precision)
    eta = tf[TF_ETA]
    decay = block.dtype.type(1.0 - eta * tf[TF_WEIGHT_DECAY])
    ev, dv = simd.splat(eta, zero), simd.splat(decay, zero)
    if decay == 1.0:  # 1 * theta is theta bit for bit
        for k in range(0, dim * lanes, lanes):
            simd.store(block, k, simd.load(block, k) - ev * simd.load(grad, k))
    else:
        for k in range(0, dim * lanes, lanes):
            simd.store(block, k, dv * simd.load(block, k) - ev * simd.load(grad, k))
    _add_noise_lanes(block, dim, tf[TF_NOISE_STD], seed, first_replica, step)
    return 0


@njit(cache=True, error_model="numpy", inline="always")
def batch_step(theta, x, y, mi, mf, ti, tf, seed, replica, step, z, h, g, perm, perm_epoch):
    """One step on the full batch or a sampled batch of B examples: the batch gradient is
    accumulated in g, then applied; False if the loss gradient was not finite."""
    dim = mi[MI_DIM]
    n_train = x.shape[0]
    batch = ti[TI_BATCH]
    sampling = ti[TI_SAMPLING]
    loss_code = ti[TI_LOSS]
    for j in range(dim):
        g[j] = 0.0
    coef = 1.0 / batch
    count = n_train if sampling == _FULL else batch
    dl_sum = 0.0
    for b in range(count):
        mu = batch_member(seed, replica, step, b, batch, n_train, sampling, perm, perm_epoch)
        dl_sum += _accumulate(theta, x, y, mu, mi, mf, loss_code, coef, z, h, g)
    if not math.isfinite(dl_sum):
        return False
    apply_update(theta, g, dim, tf, seed, replica, step)
    return True


@njit(cache=True, error_model="numpy")
def discrete_step_outputs(theta, x, y, mi, mf, ti, tf, seed, replica, step, z, h, g, f, coefs, perm, perm_epoch):
    """One step (any sampling) for M > 1 outputs: the per-sample loss is the sum over outputs of l(f_m, y_m),
    y the flat targets [P * M] (row mu: y[mu * M + m]); f, coefs are scratch [M]. Float64 only.

    No fused single-sample path: the gradient is accumulated, then applied (same update rule).
    """
    dim = mi[MI_DIM]
    n_out = mi[MI_OUTPUTS]
    n_train = x.shape[0]
    batch = ti[TI_BATCH]
    sampling = ti[TI_SAMPLING]
    loss_code = ti[TI_LOSS]
    for j in range(dim):
        g[j] = 0.0
    count = n_train if sampling == _FULL else batch
    coef = 1.0 / count
    dl_sum = 0.0
    for b in range(count):
        mu = batch_member(seed, replica, step, b, batch, n_train, sampling, perm, perm_epoch)
        forward_outputs(theta, x[mu], mi, mf, z, h, f)
        for m in range(n_out):
            dl = loss_derivative(f[m], y[mu * n_out + m], loss_code)
            dl_sum += dl
            coefs[m] = coef * dl
        add_gradient_outputs(theta, x[mu], mi, mf, z, h, coefs, g)
    if not math.isfinite(dl_sum):
        return False
    apply_update(theta, g, dim, tf, seed, replica, step)
    return True
