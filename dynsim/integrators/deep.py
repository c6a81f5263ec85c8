"""Compiled per-replica steps of every trainer for the deep MLP (``dynsim.models.deep``).

Same contract, same packed ``trainer_ints`` / ``trainer_floats`` and same random streams as the
simple network's steps (``discrete.py``, ``sde.py``); only the gradient differs (softmax
cross-entropy of K logits, backpropagated through L layers):

* ``deep_discrete_step``: GD, SGD (with or without replacement), Langevin:
  theta <- (1 - eta lambda) theta - eta g_batch + sqrt(2 eta T) xi, where ``training.clip_norm`` = c > 0
  first rescales the loss gradient to g_batch min(1, c / |g_batch|) (global L2 norm, the rule of
  ``torch.nn.utils.clip_grad_norm_``; weight decay and noise are not clipped);
* ``deep_sde_step``: d theta = -(grad L + lambda theta) dt + B dW with the ``sde.py`` schemes and
  noises. For the SGD noise, sum_mu xi_mu g_mu is a second backward pass per sample with its own
  output error (one forward pass serves both); ``sde.finish_drift_noise`` centres and scales it.
"""
import math

from numba import njit

from ..models.deep import L_FAN_OUT, L_OUT, backward, forward, sample_gradient, softmax_loss
from . import TF_CLIP_NORM, TF_DT, TF_SQRT_DT, TI_BATCH, TI_N_XI, TI_NOISE, TI_SAMPLING, TI_SCHEME
from .discrete import _FULL, apply_update, batch_member
from .sde import (NOISE_SGD, W_ACC, W_DRIFT, W_NOISE, W_POINT, fill_step_normals, finish_drift_noise,
                  scheme_stage, scheme_stages)


@njit(cache=True, error_model="numpy")
def deep_discrete_step(theta, x, labels, layers, act, ti, tf, seed, replica, step, pre, post, delta, prob, g,
                       perm, perm_epoch):
    """Advance one replica by one GD / SGD / Langevin step in place; False if the loss was not finite."""
    n_train = x.shape[0]
    batch = ti[TI_BATCH]
    sampling = ti[TI_SAMPLING]
    for j in range(theta.shape[0]):
        g[j] = 0.0
    count = n_train if sampling == _FULL else batch
    coef = 1.0 / count
    loss_sum = 0.0
    for b in range(count):
        mu = batch_member(seed, replica, step, b, batch, n_train, sampling, perm, perm_epoch)
        loss_sum += sample_gradient(theta, x[mu], labels[mu], layers, act, pre, post, delta, prob, coef, g)
    if not math.isfinite(loss_sum):
        return False
    if tf[TF_CLIP_NORM] > 0.0:
        clip_gradient(g, tf[TF_CLIP_NORM])
    apply_update(theta, g, theta.shape[0], tf, seed, replica, step)
    return True


@njit(cache=True, error_model="numpy")
def clip_gradient(g, clip_norm):
    """g <- g min(1, clip_norm / |g|) in place; returns |g| before clipping.

    A gradient at or below the bound is left untouched (not multiplied by 1.0), so that clipping that
    does not bite leaves the step bit-identical to the unclipped one."""
    total = 0.0
    for j in range(g.shape[0]):
        total += g[j] * g[j]
    norm = math.sqrt(total)
    if norm > clip_norm:
        scale = clip_norm / norm
        for j in range(g.shape[0]):
            g[j] *= scale
    return norm


@njit(cache=True, error_model="numpy")
def _weighted_backward(theta, layers, act, pre, post, delta, prob, label, weight, target):
    """target += weight * grad l of the sample whose forward pass and probabilities are in the buffers."""
    last = layers.shape[0] - 1
    out_off, classes = layers[last, L_OUT], layers[last, L_FAN_OUT]
    for k in range(classes):
        delta[out_off + k] = weight * prob[k]
    delta[out_off + label] -= weight
    backward(theta, layers, act, pre, post, delta, target)


@njit(cache=True, error_model="numpy")
def deep_drift_noise(theta, x, labels, layers, act, ti, tf, xi, pre, post, delta, prob, drift, noise):
    """drift = -(grad L + lambda theta) and noise = B(theta) xi at ``theta`` (full training set),
    finished by ``sde.finish_drift_noise`` as for the simple network."""
    n_train = x.shape[0]
    kind = ti[TI_NOISE]
    inv_p = 1.0 / n_train
    last = layers.shape[0] - 1
    out_off, classes = layers[last, L_OUT], layers[last, L_FAN_OUT]
    for j in range(theta.shape[0]):
        drift[j] = 0.0
        noise[j] = 0.0
    xi_sum = 0.0
    loss_sum = 0.0
    for mu in range(n_train):
        label = labels[mu]
        if kind != NOISE_SGD:
            loss_sum += sample_gradient(theta, x[mu], label, layers, act, pre, post, delta, prob, inv_p, drift)
            continue
        forward(theta, x[mu], layers, act, pre, post)
        loss_sum += softmax_loss(post, out_off, classes, label, prob)
        _weighted_backward(theta, layers, act, pre, post, delta, prob, label, inv_p, drift)
        _weighted_backward(theta, layers, act, pre, post, delta, prob, label, xi[mu], noise)
        xi_sum += xi[mu]
    if not math.isfinite(loss_sum):
        return False
    finish_drift_noise(theta, tf, kind, xi, xi_sum, loss_sum * inv_p, drift, noise)
    return True


@njit(cache=True, error_model="numpy")
def deep_sde_step(theta, x, labels, layers, act, ti, tf, seed, replica, step, pre, post, delta, prob, xi, work):
    """Advance one replica from t = step dt to t + dt in place (``sde.py`` schemes); False if not finite."""
    scheme = ti[TI_SCHEME]
    fill_step_normals(seed, replica, step, xi, ti[TI_N_XI])
    drift, noise, point = work[W_DRIFT], work[W_NOISE], work[W_POINT]
    for stage in range(scheme_stages(scheme)):
        at = theta if stage == 0 else point
        if not deep_drift_noise(at, x, labels, layers, act, ti, tf, xi, pre, post, delta, prob, drift, noise):
            return False
        scheme_stage(scheme, stage, theta, point, work[W_ACC], drift, noise, tf[TF_DT], tf[TF_SQRT_DT])
    return True
