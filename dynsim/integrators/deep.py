"""Compiled per-replica steps of every trainer for the deep MLP (``dynsim.models.deep``).

Same contract, same packed ``trainer_ints`` / ``trainer_floats`` and same random streams as the
simple network's steps (``discrete.py``, ``sde.py``); only the gradient differs (softmax
cross-entropy of K logits, backpropagated through L layers):

* ``deep_discrete_step``: GD, SGD (with or without replacement), Langevin:
  theta <- (1 - eta lambda) theta - eta g_batch + sqrt(2 eta T) xi;
* ``deep_sde_step``: d theta = -(grad L + lambda theta) dt + B dW with the ``sde.py`` schemes and
  noises. The SGD noise B xi = sqrt(eta / (B P)) sum_mu (xi_mu - mean xi) g_mu is a second backward
  pass per sample with its own output error (one forward pass serves both).
"""
import math

from numba import njit

from ..models.deep import L_FAN_OUT, L_OUT, backward, forward, sample_gradient, softmax_loss
from . import TF_DT, TF_ETA, TF_NOISE_COEF, TF_NOISE_STD, TF_SQRT_DT, TF_WEIGHT_DECAY, TI_BATCH, TI_N_XI
from . import TI_NOISE, TI_SAMPLING, TI_SCHEME
from .discrete import _FULL, _add_noise, _sample_index
from .sde import (NOISE_LANGEVIN, NOISE_LOSS_SCALED, NOISE_SGD, W_ACC, W_DRIFT, W_NOISE, W_POINT,
                  fill_step_normals, scheme_stage, scheme_stages)


@njit(cache=True, error_model="numpy")
def deep_discrete_step(theta, x, labels, layers, act, ti, tf, seed, replica, step, pre, post, delta, prob, g,
                       perm, perm_epoch):
    """Advance one replica by one GD / SGD / Langevin step in place; False if the loss was not finite."""
    dim = theta.shape[0]
    n_train = x.shape[0]
    batch = ti[TI_BATCH]
    sampling = ti[TI_SAMPLING]
    eta = tf[TF_ETA]
    decay = 1.0 - eta * tf[TF_WEIGHT_DECAY]
    noise = tf[TF_NOISE_STD]
    for j in range(dim):
        g[j] = 0.0
    count = n_train if sampling == _FULL else batch
    coef = 1.0 / count
    loss_sum = 0.0
    for b in range(count):
        mu = b if sampling == _FULL else _sample_index(seed, replica, step, b, batch, n_train, sampling, perm,
                                                         perm_epoch)
        loss_sum += sample_gradient(theta, x[mu], labels[mu], layers, act, pre, post, delta, prob, coef, g)
    if not math.isfinite(loss_sum):
        return False
    for j in range(dim):
        theta[j] = decay * theta[j] - eta * g[j]
    if noise > 0.0:
        _add_noise(theta, dim, noise, seed, replica, step)
    return True


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
    """drift = -(grad L + lambda theta) and noise = B(theta) xi at ``theta`` (full training set)."""
    dim = theta.shape[0]
    n_train = x.shape[0]
    kind = ti[TI_NOISE]
    inv_p = 1.0 / n_train
    last = layers.shape[0] - 1
    out_off, classes = layers[last, L_OUT], layers[last, L_FAN_OUT]
    for j in range(dim):
        drift[j] = 0.0
        noise[j] = 0.0
    xi_mean = 0.0
    if kind == NOISE_SGD:
        for mu in range(n_train):
            xi_mean += xi[mu]
        xi_mean *= inv_p
    loss_sum = 0.0
    for mu in range(n_train):
        label = labels[mu]
        if kind != NOISE_SGD:
            loss_sum += sample_gradient(theta, x[mu], label, layers, act, pre, post, delta, prob, inv_p, drift)
            continue
        forward(theta, x[mu], layers, act, pre, post)
        loss_sum += softmax_loss(post, out_off, classes, label, prob)
        _weighted_backward(theta, layers, act, pre, post, delta, prob, label, inv_p, drift)
        _weighted_backward(theta, layers, act, pre, post, delta, prob, label, xi[mu] - xi_mean, noise)
    if not math.isfinite(loss_sum):
        return False
    coef = tf[TF_NOISE_COEF]
    if kind == NOISE_SGD:
        for j in range(dim):
            noise[j] *= coef
    elif kind == NOISE_LANGEVIN:
        for j in range(dim):
            noise[j] = coef * xi[j]
    elif kind == NOISE_LOSS_SCALED:
        amp = coef * math.sqrt(loss_sum * inv_p)
        for j in range(dim):
            noise[j] = amp * xi[j]
    decay = tf[TF_WEIGHT_DECAY]
    for j in range(dim):
        drift[j] = -drift[j] - decay * theta[j]
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
