"""What is measured on a deep MLP at record times (``[model] kind = "mlp"``).

Definitions (as used by dynsim; ../shared/papers/companions.md B and DESIGN.md section 4):

* Neuron modes, per hidden layer, on the training set. A training sample passes through a neuron's
  *high-gain* part when sigma'(z) >= MODE_GAIN * max sigma' (``MODE_GAIN`` = 1/2), z its
  pre-activation; the rest of the activation is its *flat* part. A neuron is *order-preserving* when
  every training sample passes through the high-gain part, *dead* (flat) when none does, and
  *order-breaking* (mixed) otherwise; ``mode_gain_fraction`` is the layer's mean over neurons of the
  fraction of samples in the high-gain part. Why: where sigma' is high the neuron passes the samples
  on in order and at nearly their distances (it acts as a linear map there); on a flat part it maps
  them to nearly one value, so their order is lost to ties (relu, z <= 0) or to compression by a
  small slope (a saturated tanh, sigmoid or erf). For relu (sigma' = 1 on z > 0, 0 else) and softplus
  (sigma' = sigmoid(z) >= 1/2 for z >= 0) the high-gain part is z > 0 (z >= 0), the pieces of the
  earlier definition; for tanh it is |z| <= 0.881, for sigmoid |z| <= 1.763, for erf |z| <= 0.833;
  for linear units it is everything (they are order-preserving by construction). Files written
  before 2026-12-04 hold the earlier definition (every neuron of a strictly increasing activation
  order-preserving), identical to this one for relu.
* Sample-space basin of a training sample x with predicted class c: the largest radius r such that
  x + r u is still classified c for every one of ``basin_directions`` random unit directions u
  (the same directions for every sample, replica and record), found by bisection on
  [0, basin_max_radius] to ``basin_bisections`` halvings (the result is the last radius that passed;
  basin_max_radius if even that passes). Recorded per basin sample (the run's /inputs/basin_index).
* Weight-space basin: the largest eps such that for every one of ``weight_basin_directions``
  random directions the training accuracy of theta + eps * d stays >= weight_basin_fraction times
  the unperturbed training accuracy; d has, layer by layer (weights and bias of a layer together),
  the norm of that layer's parameters (a relative perturbation), its direction drawn from the
  replica's counter stream (seed, replica, BASIN, direction). Bisection on [0, weight_basin_max].
* Output-feature collapse: the effective rank exp(-sum p_k log p_k), p_k = s_k / sum s, of the
  centred last-hidden-layer features of n samples (s_k their singular values), for the first n
  training inputs and for n random-noise inputs (uniform per coordinate between the training
  set's minimum and maximum of that coordinate).
* Fooling: the fraction of the noise inputs whose largest softmax probability is >= the
  ``fooling_confidence`` (a trained net "confidently" classifying noise), and the mean of that
  largest probability.
"""
import dataclasses

import numpy as np
from numba import njit

from ..models.activations import activate_derivative
from ..models.deep import L_FAN_IN, L_FAN_OUT, L_OUT, L_B, L_W, forward, predicted_class, softmax_loss
from ..parallel import over_replicas
from ..rng import fill_normals
from . import ObservableSpec

STREAM_BASIN = 5  # directions of the weight-space basin (dynsim.rng streams 0-4 are taken)
#: a sample is in a neuron's high-gain part where sigma'(z) >= MODE_GAIN * max sigma'
MODE_GAIN = 0.5
#: max sigma' per activation code (linear, relu, tanh, sigmoid, erf, softplus: dynsim.models.activations)
MAX_SLOPE = np.array([1.0, 1.0, 1.0, 0.25, 2.0 / np.sqrt(np.pi), 1.0])

DEEP_OBSERVABLE_SPECS = (
    ObservableSpec("loss_train", (), "loss", "softmax cross-entropy, mean over the training set"),
    ObservableSpec("loss_test", (), "loss", "softmax cross-entropy, mean over the test set"),
    ObservableSpec("accuracy_train", (), "fraction", "fraction of training samples whose largest logit is their label"),
    ObservableSpec("accuracy_test", (), "fraction", "fraction of test samples classified correctly"),
    ObservableSpec("param_norm", (), "parameter units", "Euclidean norm |theta| of the flat parameter vector"),
    ObservableSpec("mode_order_preserving", ("layer",), "fraction",
                   "per hidden layer: fraction of neurons through whose high-gain part (sigma' >= 1/2 max sigma') "
                   "every training sample passes"),
    ObservableSpec("mode_dead", ("layer",), "fraction",
                   "per hidden layer: fraction of neurons with every training sample on the flat part (sigma' < "
                   "1/2 max sigma')"),
    ObservableSpec("mode_order_breaking", ("layer",), "fraction",
                   "per hidden layer: fraction of neurons with training samples on both parts (mixed)"),
    ObservableSpec("basin_sample", ("source",), "input units",
                   "largest radius of random input perturbation (all record.basin_directions directions) that keeps "
                   "the basin sample's predicted class; bisection, capped at record.basin_max_radius"),
    ObservableSpec("basin_weight", (), "relative",
                   "largest relative random weight perturbation (layer-wise norm) keeping the training accuracy >= "
                   "record.weight_basin_fraction x its unperturbed value in every direction"),
    ObservableSpec("feature_rank_data", (), "units",
                   "effective rank of the centred last-hidden-layer features of the first n training inputs"),
    ObservableSpec("feature_rank_noise", (), "units",
                   "effective rank of the centred last-hidden-layer features of n random-noise inputs"),
    ObservableSpec("mode_gain_fraction", ("layer",), "fraction",
                   "per hidden layer: mean over neurons of the fraction of training samples in the high-gain part"),
    ObservableSpec("fooling_fraction", (), "fraction",
                   "fraction of random-noise inputs classified with softmax confidence >= record.fooling_confidence"),
    ObservableSpec("noise_confidence", (), "probability", "mean largest softmax probability on the noise inputs"),
)
DEEP_OBSERVABLES = {spec.name: spec for spec in DEEP_OBSERVABLE_SPECS}
# mode_gain_fraction is asked for by name: a default list that grew would change the resolved
# config, and with it the digest, of every deep config written before it existed
DEEP_DEFAULT_OBSERVABLES = tuple(name for name in DEEP_OBSERVABLES if name != "mode_gain_fraction")
MODE_NAMES = ("mode_order_preserving", "mode_dead", "mode_order_breaking", "mode_gain_fraction")
FEATURE_NAMES = ("feature_rank_data", "feature_rank_noise", "fooling_fraction", "noise_confidence")


def deep_dim_sizes(depth: int, n_basin: int, n_noise: int) -> dict[str, int]:
    return {"layer": depth, "source": n_basin, "probe": n_noise}


def allocate_deep(names, replicas: int, depth: int, n_basin: int) -> dict[str, np.ndarray]:
    """Record buffers [replicas, *dims] of the selected deep observables (only those: the kernels skip
    what is not asked for)."""
    sizes = deep_dim_sizes(depth, n_basin, 0)
    return {name: np.full((replicas,) + tuple(sizes[d] for d in DEEP_OBSERVABLES[name].dims), np.nan)
            for name in names}


@dataclasses.dataclass(frozen=True)
class DeepProbes:
    """The inputs the measurements use besides the training and test sets."""
    basin_x: np.ndarray         # [n_basin, D] training inputs whose sample-space basin is measured
    directions: np.ndarray      # [n_dir, D] unit vectors of the sample-space basin
    feature_x: np.ndarray       # [n, D] training inputs for the data feature rank
    noise_x: np.ndarray         # [n, D] random-noise inputs (feature rank, fooling)
    weight_x: np.ndarray        # [m, D] training inputs of the weight-space basin's accuracy
    weight_labels: np.ndarray   # [m] int64


def measure_deep(params, x_train, labels_train, x_test, labels_test, layers, act, probes: DeepProbes, record, seed,
                 buffers):
    """Fill ``buffers`` (from ``allocate_deep``) for every replica at the current parameters.

    ``record`` carries the basin and fooling options (the [record] section of a deep config).
    """
    replicas = params.shape[0]
    names = set(buffers)
    n_hidden = layers.shape[0] - 1
    metrics = np.full((replicas, 5), np.nan)
    modes = np.full((replicas, len(MODE_NAMES), n_hidden), np.nan)
    want_features = bool(names & set(FEATURE_NAMES))
    width_last = int(layers[n_hidden, L_FAN_IN])
    n_feat = probes.noise_x.shape[0] if want_features else 0
    feat_data = np.empty((replicas, n_feat, width_last))
    feat_noise = np.empty((replicas, n_feat, width_last))
    confidence = np.empty((replicas, n_feat))
    n_basin = probes.basin_x.shape[0] if "basin_sample" in names else 0
    basin = np.full((replicas, n_basin), np.nan)
    want_weight = "basin_weight" in names
    weight_basin = np.full(replicas, np.nan)
    over_replicas(_measure_kernel, replicas, params, x_train, labels_train, x_test, labels_test, layers, act,
                  probes.feature_x[:n_feat], probes.noise_x[:n_feat], probes.basin_x[:n_basin], probes.directions,
                  record.basin_max_radius, record.basin_bisections,
                  probes.weight_x if want_weight else probes.weight_x[:0], probes.weight_labels,
                  np.uint64(seed), record.weight_basin_directions if want_weight else 0, record.weight_basin_max,
                  record.weight_basin_fraction, MODE_GAIN * MAX_SLOPE[act], metrics, modes, feat_data, feat_noise,
                  confidence, basin, weight_basin)
    for k, name in enumerate(("loss_train", "accuracy_train", "loss_test", "accuracy_test", "param_norm")):
        if name in names:
            buffers[name][...] = metrics[:, k]
    for k, name in enumerate(MODE_NAMES):
        if name in names:
            buffers[name][...] = modes[:, k]
    if "basin_sample" in names:
        buffers["basin_sample"][...] = basin
    if want_weight:
        buffers["basin_weight"][...] = weight_basin
    if want_features:
        if "feature_rank_data" in names:
            buffers["feature_rank_data"][...] = effective_rank(feat_data)
        if "feature_rank_noise" in names:
            buffers["feature_rank_noise"][...] = effective_rank(feat_noise)
        if "fooling_fraction" in names:
            buffers["fooling_fraction"][...] = np.mean(confidence >= record.fooling_confidence, axis=1)
        if "noise_confidence" in names:
            buffers["noise_confidence"][...] = confidence.mean(axis=1)


def effective_rank(features: np.ndarray) -> np.ndarray:
    """exp(entropy of s_k / sum s) of the sample-centred features [..., n, units]; NaN for all-equal rows."""
    centred = features - features.mean(axis=-2, keepdims=True)
    s = np.linalg.svd(centred, compute_uv=False)
    total = s.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = s / total
        entropy = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)
    return np.where(total[..., 0] > 0, np.exp(entropy), np.nan)


# -- compiled kernels ---------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def _metrics(theta, x, labels, layers, act, pre, post, prob, gain, slope_min):
    """(mean loss, accuracy) over a data set; with gain of length n_units, also the number of samples in
    every unit's high-gain part (sigma'(z) >= slope_min)."""
    last = layers.shape[0] - 1
    out_off, classes = layers[last, L_OUT], layers[last, L_FAN_OUT]
    track = gain.shape[0] > 0
    if track:
        gain[:] = 0.0
    loss, correct = 0.0, 0
    n = x.shape[0]
    for mu in range(n):
        forward(theta, x[mu], layers, act, pre, post)
        loss += softmax_loss(post, out_off, classes, labels[mu], prob)
        if predicted_class(post, out_off, classes) == labels[mu]:
            correct += 1
        if track:  # the hidden units: the input's slots of pre are never written
            for u in range(layers[0, L_OUT], out_off):
                if activate_derivative(pre[u], act) >= slope_min:
                    gain[u] += 1.0
    if n == 0:
        return np.nan, np.nan
    return loss / n, correct / n


@njit(cache=True, error_model="numpy")
def _modes(layers, gain, n_samples, out):
    """out[4, L]: fractions of order-preserving, dead and order-breaking neurons per hidden layer, and the
    mean fraction of samples in a neuron's high-gain part, from ``gain`` (samples there, per unit)."""
    for l in range(layers.shape[0] - 1):
        fan_out, off = layers[l, L_FAN_OUT], layers[l, L_OUT]
        keep, dead, share = 0, 0, 0.0
        for i in range(fan_out):
            g = gain[off + i]
            if g >= n_samples:
                keep += 1
            elif g == 0.0:
                dead += 1
            share += g / n_samples
        out[0, l] = keep / fan_out
        out[1, l] = dead / fan_out
        out[2, l] = (fan_out - keep - dead) / fan_out
        out[3, l] = share / fan_out


@njit(cache=True, error_model="numpy")
def _features(theta, x, layers, act, pre, post, prob, features, confidence):
    """Last-hidden-layer features [n, width_L] of the rows of x; with confidence of length n, also the
    largest softmax probability of each."""
    last = layers.shape[0] - 1
    in_off, width = layers[last, L_OUT] - layers[last, L_FAN_IN], layers[last, L_FAN_IN]
    out_off, classes = layers[last, L_OUT], layers[last, L_FAN_OUT]
    for n in range(x.shape[0]):
        forward(theta, x[n], layers, act, pre, post)
        for i in range(width):
            features[n, i] = post[in_off + i]
        if confidence.shape[0] > 0:
            softmax_loss(post, out_off, classes, 0, prob)
            confidence[n] = prob.max()


@njit(cache=True, error_model="numpy")
def _all_keep_class(theta, x0, directions, radius, layers, act, pre, post, moved, target):
    """x0 + radius u is classified ``target`` for every direction u (rows of ``directions``)."""
    last = layers.shape[0] - 1
    for k in range(directions.shape[0]):
        for d in range(x0.shape[0]):
            moved[d] = x0[d] + radius * directions[k, d]
        forward(theta, moved, layers, act, pre, post)
        if predicted_class(post, layers[last, L_OUT], layers[last, L_FAN_OUT]) != target:
            return False
    return True


@njit(cache=True, error_model="numpy")
def sample_basin(theta, x0, directions, max_radius, bisections, layers, act, pre, post, moved):
    """Largest radius (bisection) at which x0 + r u keeps x0's predicted class for every direction u."""
    last = layers.shape[0] - 1
    forward(theta, x0, layers, act, pre, post)
    target = predicted_class(post, layers[last, L_OUT], layers[last, L_FAN_OUT])
    if _all_keep_class(theta, x0, directions, max_radius, layers, act, pre, post, moved, target):
        return max_radius
    lo, hi = 0.0, max_radius
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        if _all_keep_class(theta, x0, directions, mid, layers, act, pre, post, moved, target):
            lo = mid
        else:
            hi = mid
    return lo


@njit(cache=True, error_model="numpy")
def _weight_direction(theta, layers, seed, replica, direction, out):
    """out = a random direction with, layer by layer, the norm of that layer's parameters."""
    fill_normals(seed, replica, STREAM_BASIN, direction, out)
    for l in range(layers.shape[0]):
        start = layers[l, L_W]
        stop = layers[l, L_B] + layers[l, L_FAN_OUT] if layers[l, L_B] >= 0 else start + layers[l, L_FAN_IN] * layers[
            l, L_FAN_OUT]
        norm_theta, norm_out = 0.0, 0.0
        for j in range(start, stop):
            norm_theta += theta[j] * theta[j]
            norm_out += out[j] * out[j]
        scale = np.sqrt(norm_theta / norm_out) if norm_out > 0.0 else 0.0
        for j in range(start, stop):
            out[j] *= scale


@njit(cache=True, error_model="numpy")
def _accuracy(theta, x, labels, layers, act, pre, post):
    last = layers.shape[0] - 1
    correct = 0
    for mu in range(x.shape[0]):
        forward(theta, x[mu], layers, act, pre, post)
        if predicted_class(post, layers[last, L_OUT], layers[last, L_FAN_OUT]) == labels[mu]:
            correct += 1
    return correct / x.shape[0]


@njit(cache=True, error_model="numpy")
def _all_keep_accuracy(theta, eps, x, labels, layers, act, seed, replica, n_directions, need, pre, post, moved,
                       direction):
    """The training accuracy of theta + eps d is >= need for each of the replica's random directions d."""
    for k in range(n_directions):
        _weight_direction(theta, layers, seed, replica, k, direction)
        for j in range(theta.shape[0]):
            moved[j] = theta[j] + eps * direction[j]
        if _accuracy(moved, x, labels, layers, act, pre, post) < need:
            return False
    return True


@njit(cache=True, error_model="numpy")
def weight_basin(theta, x, labels, layers, act, seed, replica, n_directions, max_eps, bisections, fraction, pre, post,
                 moved, direction):
    """Largest relative perturbation eps (bisection) keeping accuracy >= fraction x unperturbed in every direction.

    The directions are regenerated from their counter keys at every test instead of being kept:
    one parameter vector of workspace instead of one per direction.
    """
    need = fraction * _accuracy(theta, x, labels, layers, act, pre, post)
    if _all_keep_accuracy(theta, max_eps, x, labels, layers, act, seed, replica, n_directions, need, pre, post, moved,
                          direction):
        return max_eps
    lo, hi = 0.0, max_eps
    for _ in range(bisections):
        mid = 0.5 * (lo + hi)
        if _all_keep_accuracy(theta, mid, x, labels, layers, act, seed, replica, n_directions, need, pre, post, moved,
                              direction):
            lo = mid
        else:
            hi = mid
    return lo


# A replica block on one thread (``over_replicas``), not ``prange``: a parfor kernel of this size doubles
# its compile time (20 s against 11 s, measured). It releases the GIL because at record times of a large net
# it runs for minutes in one call (depth 16 x width 512 on 4,000 samples: over 5 min), and a Dask
# worker whose heartbeat thread cannot take the GIL that long is killed by its scheduler.
@njit(cache=True, error_model="numpy", nogil=True)
def _measure_kernel(r0, r1, params, x_train, labels_train, x_test, labels_test, layers, act, feature_x, noise_x,
                    basin_x, directions, max_radius, bisections, weight_x, weight_labels, seed, weight_directions,
                    max_eps, weight_fraction, slope_min, metrics, modes, feat_data, feat_noise, confidence, basin,
                    weight_basin_out):
    dim = params.shape[1]
    last = layers.shape[0] - 1
    n_units = layers[last, L_OUT] + layers[last, L_FAN_OUT]
    classes = layers[last, L_FAN_OUT]
    for r in range(r0, r1):
        theta = params[r]
        pre = np.empty(n_units)
        post = np.empty(n_units)
        prob = np.empty(classes)
        gain = np.empty(n_units)
        loss, acc = _metrics(theta, x_train, labels_train, layers, act, pre, post, prob, gain, slope_min)
        metrics[r, 0] = loss
        metrics[r, 1] = acc
        _modes(layers, gain, x_train.shape[0], modes[r])
        loss, acc = _metrics(theta, x_test, labels_test, layers, act, pre, post, prob, gain[:0], slope_min)
        metrics[r, 2] = loss
        metrics[r, 3] = acc
        metrics[r, 4] = np.sqrt(np.sum(theta * theta))
        if feature_x.shape[0] > 0:
            _features(theta, feature_x, layers, act, pre, post, prob, feat_data[r], confidence[r, :0])
            _features(theta, noise_x, layers, act, pre, post, prob, feat_noise[r], confidence[r])
        moved_x = np.empty(x_train.shape[1])
        for b in range(basin_x.shape[0]):
            basin[r, b] = sample_basin(theta, basin_x[b], directions, max_radius, bisections, layers, act, pre, post,
                                       moved_x)
        if weight_directions > 0 and weight_x.shape[0] > 0:
            moved_theta = np.empty(dim)
            direction = np.empty(dim)
            weight_basin_out[r] = weight_basin(theta, weight_x, weight_labels, layers, act, seed, r, weight_directions,
                                               max_eps, bisections, weight_fraction, pre, post, moved_theta, direction)
