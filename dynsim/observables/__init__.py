"""What is measured at record times: one registry of specs, compiled kernels over replica blocks.

Every observable is stored as ``/observables/NAME`` with shape ``[record, replica, *dims]``; the
spec below is the single source of its dims, units and description (the store loops over it).

Training response (as defined in dynsim, DESIGN.md section 4): at record step t, for every source
sample x_s take the update a plain gradient step on x_s alone would make,
Delta theta = -eta l'(f(x_s), y_s) grad_theta f(x_s) (no noise, no weight decay), apply it to a
copy of the replica and record R_t(x; x_s) = f(x; theta + Delta theta) - f(x; theta) at every
probe x. Its first-order prediction is -eta l'(x_s) Theta_t(x, x_s), Theta_t the empirical NTK.
"""
import dataclasses

import numpy as np
from numba import njit

from ..losses import loss_derivative, loss_value
from ..models.multi import add_gradient_outputs, forward_outputs
from ..models.simple import MI_DIM, MI_OUTPUTS, MI_WIDTH, add_gradient_outlined, forward_outlined
from ..parallel import over_replicas
from .representation import measure_representation, probe_outputs


@dataclasses.dataclass(frozen=True)
class ObservableSpec:
    name: str
    dims: tuple[str, ...]  # dims after (record, replica)
    units: str
    description: str
    classification_only: bool = False
    expensive: bool = False
    cpu_only: bool = False      # computed by a CPU kernel only (the CUDA backend refuses it)
    two_time: bool = False      # needs the two-time grid ([record] two_time_waits > 0)


OBSERVABLE_SPECS = (
    ObservableSpec("loss_train", (), "loss", "training loss L = mean over training samples of l(f, y)"),
    ObservableSpec("loss_test", (), "loss", "mean loss over the test set"),
    ObservableSpec("accuracy_train", (), "fraction", "fraction of training samples classified correctly", True),
    ObservableSpec("accuracy_test", (), "fraction", "fraction of test samples classified correctly", True),
    ObservableSpec("param_norm", (), "parameter units", "Euclidean norm |theta| of the flat parameter vector"),
    ObservableSpec("ntk", ("probe", "probe2"), "output^2 / parameter^2",
                   "empirical NTK Theta_t(x_p, x_q) = grad f(x_p) . grad f(x_q) on the probes", expensive=True),
    ObservableSpec("response", ("source", "probe"), "output",
                   "exact one-step response R_t(x_p; x_s) = f(x_p; theta + Delta theta_s) - f(x_p; theta)",
                   expensive=True),
    ObservableSpec("response_linear", ("source", "probe"), "output",
                   "first-order response -eta l'(x_s) Theta_t(x_p, x_s)", expensive=True),
    # feature-space reduction: H [probe, unit] = hidden activations on the probes, centred over probes
    ObservableSpec("feature_spectrum", ("rank",), "activation units",
                   "singular values s_k of the probe-centred hidden representation H [probe, unit], descending "
                   "(rank = min(n_probes, width))", cpu_only=True),
    ObservableSpec("effective_rank", (), "units",
                   "exp of the entropy of p_k = s_k / sum s (Roy & Vetterli 2007) of feature_spectrum", cpu_only=True),
    ObservableSpec("participation_ratio", (), "units",
                   "(sum lambda)^2 / sum lambda^2 of the feature covariance eigenvalues lambda_k = s_k^2 / n_probes "
                   "(biased low when n_probes is small: at most n_probes - 1)", cpu_only=True),
    ObservableSpec("output", ("probe", "output_index"), "output",
                   "network outputs f_m(x_p) at each probe (logits for the cross_entropy and sigmoid_squared losses)",
                   cpu_only=True),
    # M > 1 outputs: the NTK and the response gain output indices
    ObservableSpec("ntk_outputs", ("probe", "probe2", "output_index", "output_index2"), "output^2 / parameter^2",
                   "empirical NTK of M outputs Theta_mn(x_p, x_q) = grad f_m(x_p) . grad f_n(x_q) on the probes",
                   expensive=True, cpu_only=True),
    ObservableSpec("response_outputs", ("source", "probe", "output_index"), "output",
                   "exact one-step response of every output f_m(x_p; theta + Delta theta_s) - f_m(x_p; theta), "
                   "Delta theta_s = -eta sum_n l'(f_n(x_s), y_sn) grad f_n(x_s)", expensive=True, cpu_only=True),
    # fragility on the probes
    ObservableSpec("input_grad_norm", ("probe",), "output / input", "|d f / d x| at each probe", cpu_only=True),
    ObservableSpec("flip_distance", ("probe",), "input units",
                   "smallest step along the signed input gradient that flips the predicted class (classification) "
                   "or moves f by record.fragility_margin (regression); +inf if none within record.fragility_max_step",
                   cpu_only=True),
    # two-time quantities against the snapshots theta(t_w), at every record t >= t_w
    ObservableSpec("autocorrelation", ("wait",), "1",
                   "C(t_w, t) = theta(t_w) . theta(t) / (|theta(t_w)| |theta(t)|); NaN before t_w", two_time=True),
    ObservableSpec("msd", ("wait",), "parameter units^2",
                   "Delta(t_w, t) = |theta(t) - theta(t_w)|^2 / n_params; NaN before t_w", two_time=True),
)
OBSERVABLES = {spec.name: spec for spec in OBSERVABLE_SPECS}
# recorded when a config names no observables; the CPU-only and two-time ones are asked for by name
# (two-time ones are added automatically when the two-time grid is on)
DEFAULT_OBSERVABLES = tuple(s.name for s in OBSERVABLE_SPECS if not (s.cpu_only or s.two_time))
FEATURE_OBSERVABLES = ("feature_spectrum", "effective_rank", "participation_ratio")
FRAGILITY_OBSERVABLES = ("input_grad_norm", "flip_distance")
TWO_TIME_OBSERVABLES = tuple(s.name for s in OBSERVABLE_SPECS if s.two_time)


#: observables of the one-output network that M > 1 outputs replace (or cannot have)
SINGLE_OUTPUT_ONLY = {"ntk": "ntk_outputs", "response": "response_outputs", "response_linear": "response_outputs",
                      "input_grad_norm": None, "flip_distance": None}
MULTI_OUTPUT_ONLY = {"ntk_outputs": "ntk", "response_outputs": "response"}


def dim_sizes(n_probes: int, n_sources: int, width: int = 0, n_waits: int = 0, outputs: int = 1) -> dict[str, int]:
    return {"probe": n_probes, "probe2": n_probes, "source": n_sources, "rank": min(n_probes, width),
            "wait": n_waits, "output_index": outputs, "output_index2": outputs}


def allocate(names, replicas: int, n_probes: int, n_sources: int, width: int = 0,
             n_waits: int = 0, outputs: int = 1) -> dict[str, np.ndarray]:
    """Buffers for one record of every observable the kernels fill (unselected ones are empty)."""
    sizes = dim_sizes(n_probes, n_sources, width, n_waits, outputs)
    names = set(names)
    for group in ({"response", "response_linear"}, set(FEATURE_OBSERVABLES), set(FRAGILITY_OBSERVABLES)):
        if names & group:  # computed together by the kernels
            names |= group
    out = {}
    for spec in OBSERVABLE_SPECS:
        shape = tuple(sizes[d] if spec.name in names else 0 for d in spec.dims)
        out[spec.name] = np.full((replicas,) + shape, np.nan)
    return out


def measure(params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility=(0, 1.0, 0.1)):
    """Fill ``buffers`` (from ``allocate``) for every replica at the current parameters.

    ``fragility`` = (classification flag, max step, regression margin) for ``flip_distance``.
    """
    if mi[MI_OUTPUTS] > 1:
        over_replicas(_measure_outputs, params.shape[0], params, data.x_train, data.y_train.reshape(-1),
                      data.x_test, data.y_test.reshape(-1), data.x_probe, data.x_source, data.y_source.reshape(-1), mi,
                      mf, loss_code, eta, buffers["loss_train"], buffers["loss_test"], buffers["accuracy_train"],
                      buffers["accuracy_test"], buffers["param_norm"], buffers["ntk_outputs"],
                      buffers["response_outputs"])
        measure_on_host(params, data, mi, mf, class_threshold, buffers, fragility)
        return
    over_replicas(_measure_losses, params.shape[0], params, data.x_train, data.y_train, data.x_test, data.y_test,
                  mi, mf, loss_code, class_threshold, buffers["loss_train"], buffers["loss_test"],
                  buffers["accuracy_train"], buffers["accuracy_test"], buffers["param_norm"])
    ntk, response, response_linear = buffers["ntk"], buffers["response"], buffers["response_linear"]
    if ntk.shape[1] > 0 or response.shape[1] > 0 or response_linear.shape[1] > 0:  # compiled only when asked for
        over_replicas(_measure_ntk_response, params.shape[0], params, data.x_probe, data.x_source, data.y_source, mi,
                      mf, loss_code, eta, ntk, response, response_linear)
    measure_on_host(params, data, mi, mf, class_threshold, buffers, fragility)


def measure_on_host(params, data, mi, mf, class_threshold, buffers, fragility=(0, 1.0, 0.1)):
    """The CPU-only observables (features, fragility, probe outputs): also for CUDA runs, on a host copy."""
    if buffers["output"].size:
        probe_outputs(params, data.x_probe, mi, mf, buffers["output"])  # [replica, probe, output]
    if any(buffers[n].size for n in FEATURE_OBSERVABLES + FRAGILITY_OBSERVABLES):
        classify, max_step, margin = fragility
        measure_representation(params, data.x_probe, mi, mf, class_threshold, int(classify), float(max_step),
                               float(margin), buffers["feature_spectrum"], buffers["effective_rank"],
                               buffers["participation_ratio"], buffers["input_grad_norm"], buffers["flip_distance"])


# Record-time kernels call the forward pass (``forward_outlined``), they do not inline it; the CUDA
# measure kernel calls ``_loss_and_accuracy`` too, as a device function.
@njit(cache=True, error_model="numpy", inline="always")
def _loss_and_accuracy(theta, x, y, mi, mf, loss_code, threshold, z, h):
    n = x.shape[0]
    if n == 0:
        return np.nan, np.nan
    total, correct = 0.0, 0
    for mu in range(n):
        f = forward_outlined(theta, x[mu], mi, mf, z, h)
        total += loss_value(f, y[mu], loss_code)
        if (f >= threshold) == (y[mu] >= threshold):
            correct += 1
    return total / n, correct / n


@njit(cache=True, error_model="numpy", nogil=True)
def _measure_losses(r0, r1, params, x_train, y_train, x_test, y_test, mi, mf, loss_code, class_threshold,
                    loss_train, loss_test, acc_train, acc_test, param_norm):
    """Losses, accuracies and |theta| of replicas r0..r1 of the one-output network."""
    dim, width = mi[MI_DIM], mi[MI_WIDTH]
    z = np.empty(width)
    h = np.empty(width)
    for r in range(r0, r1):
        theta = params[r]
        loss_train[r], acc_train[r] = _loss_and_accuracy(theta, x_train, y_train, mi, mf, loss_code,
                                                         class_threshold, z, h)
        loss_test[r], acc_test[r] = _loss_and_accuracy(theta, x_test, y_test, mi, mf, loss_code,
                                                       class_threshold, z, h)
        sq = 0.0
        for j in range(dim):
            sq += theta[j] * theta[j]
        param_norm[r] = np.sqrt(sq)


@njit(cache=True, error_model="numpy", nogil=True)
def _measure_ntk_response(r0, r1, params, x_probe, x_src, y_src, mi, mf, loss_code, eta, ntk, response,
                          response_linear):
    """NTK and one-step responses of replicas r0..r1 (each left empty when not asked for)."""
    width = mi[MI_WIDTH]
    want_ntk = ntk.shape[1] > 0
    want_response = response.shape[1] > 0 or response_linear.shape[1] > 0
    z = np.empty(width)
    h = np.empty(width)
    for r in range(r0, r1):
        _ntk_and_response(params[r], x_probe, x_src, y_src, mi, mf, loss_code, eta, z, h, want_ntk, want_response,
                          ntk[r], response[r], response_linear[r])


@njit(cache=True, error_model="numpy")
def _ntk_and_response(theta, x_probe, x_src, y_src, mi, mf, loss_code, eta, z, h, want_ntk, want_response, ntk,
                      response, response_linear):
    """One replica's NTK [probe, probe2] and one-step responses [source, probe] (see the module doc)."""
    dim = mi[MI_DIM]
    n_probe, n_src = x_probe.shape[0], x_src.shape[0]
    grads = np.zeros((n_probe, dim))
    f_probe = np.empty(n_probe)
    for p in range(n_probe):
        f_probe[p] = forward_outlined(theta, x_probe[p], mi, mf, z, h)
        add_gradient_outlined(theta, x_probe[p], mi, mf, z, h, 1.0, grads[p])
    if want_ntk:
        for p in range(n_probe):
            for q in range(p, n_probe):
                k = 0.0
                for j in range(dim):
                    k += grads[p, j] * grads[q, j]
                ntk[p, q] = k
                ntk[q, p] = k
    if want_response:
        g_src = np.empty(dim)
        moved = np.empty(dim)
        for s in range(n_src):
            g_src[:] = 0.0
            f_s = forward_outlined(theta, x_src[s], mi, mf, z, h)
            add_gradient_outlined(theta, x_src[s], mi, mf, z, h, 1.0, g_src)
            step = -eta * loss_derivative(f_s, y_src[s], loss_code)
            for j in range(dim):
                moved[j] = theta[j] + step * g_src[j]
            for p in range(n_probe):
                k = 0.0
                for j in range(dim):
                    k += grads[p, j] * g_src[j]
                response_linear[s, p] = step * k
                response[s, p] = forward_outlined(moved, x_probe[p], mi, mf, z, h) - f_probe[p]


@njit(cache=True, error_model="numpy")
def _loss_and_accuracy_outputs(theta, x, y, mi, mf, loss_code, z, h, f):
    """Mean over samples of sum_m l(f_m, y_m), and the fraction with argmax_m f_m = argmax_m y_m."""
    n, n_out = x.shape[0], mi[MI_OUTPUTS]
    if n == 0:
        return np.nan, np.nan
    total, correct = 0.0, 0
    for mu in range(n):
        forward_outputs(theta, x[mu], mi, mf, z, h, f)
        best, target = 0, 0
        for m in range(n_out):
            total += loss_value(f[m], y[mu * n_out + m], loss_code)
            if f[m] > f[best]:
                best = m
            if y[mu * n_out + m] > y[mu * n_out + target]:
                target = m
        if best == target:
            correct += 1
    return total / n, correct / n


@njit(cache=True, error_model="numpy", nogil=True)
def _measure_outputs(r0, r1, params, x_train, y_train, x_test, y_test, x_probe, x_src, y_src, mi, mf, loss_code, eta,
                     loss_train, loss_test, acc_train, acc_test, param_norm, ntk, response):
    """The observables of replicas r0..r1 for M > 1 outputs (targets flat [P * M]): NTK
    [probe, probe2, m, n] and response [source, probe, m]."""
    dim, width, n_out = mi[MI_DIM], mi[MI_WIDTH], mi[MI_OUTPUTS]
    n_probe, n_src = x_probe.shape[0], x_src.shape[0]
    want_ntk = ntk.shape[1] > 0
    want_response = response.shape[1] > 0
    for r in range(r0, r1):
        theta = params[r]
        z = np.empty(width)
        h = np.empty(width)
        f = np.empty(n_out)
        coefs = np.zeros(n_out)
        loss_train[r], acc_train[r] = _loss_and_accuracy_outputs(theta, x_train, y_train, mi, mf, loss_code, z, h, f)
        loss_test[r], acc_test[r] = _loss_and_accuracy_outputs(theta, x_test, y_test, mi, mf, loss_code, z, h, f)
        sq = 0.0
        for j in range(dim):
            sq += theta[j] * theta[j]
        param_norm[r] = np.sqrt(sq)
        if not (want_ntk or want_response):
            continue
        grads = np.zeros((n_probe, n_out, dim))
        f_probe = np.empty((n_probe, n_out))
        for p in range(n_probe):
            for m in range(n_out):
                forward_outputs(theta, x_probe[p], mi, mf, z, h, f_probe[p])
                coefs[:] = 0.0
                coefs[m] = 1.0
                add_gradient_outputs(theta, x_probe[p], mi, mf, z, h, coefs, grads[p, m])
        if want_ntk:
            for p in range(n_probe):
                for q in range(n_probe):
                    for m in range(n_out):
                        for n in range(n_out):
                            k = 0.0
                            for j in range(dim):
                                k += grads[p, m, j] * grads[q, n, j]
                            ntk[r, p, q, m, n] = k
        if want_response:
            g_src = np.empty(dim)
            moved = np.empty(dim)
            moved_f = np.empty(n_out)
            for s in range(n_src):
                g_src[:] = 0.0
                forward_outputs(theta, x_src[s], mi, mf, z, h, f)
                for m in range(n_out):
                    coefs[m] = -eta * loss_derivative(f[m], y_src[s * n_out + m], loss_code)
                add_gradient_outputs(theta, x_src[s], mi, mf, z, h, coefs, g_src)
                for j in range(dim):
                    moved[j] = theta[j] + g_src[j]
                for p in range(n_probe):
                    forward_outputs(moved, x_probe[p], mi, mf, z, h, moved_f)
                    for m in range(n_out):
                        response[r, s, p, m] = moved_f[m] - f_probe[p, m]
