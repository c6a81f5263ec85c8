"""Compiled kernels for the hidden representation, fragility and two-time observables.

Feature-space reduction. H [probe, unit] holds the hidden activations sigma(W x_p + b) on the
probes, centred over probes. Its singular values s_k come from the eigenvalues of the small Gram
matrix Hc Hc^T [probe, probe] (no SVD of the larger factor needed); the effective rank is
exp(-sum p_k log p_k) with p_k = s_k / sum s, the participation ratio (sum lambda)^2 / sum lambda^2
of the covariance eigenvalues lambda_k = s_k^2 / n_probes.

Fragility. The input gradient of the simple network is d f / d x_d = s sum_i a_i sigma'(z_i) W[d, i].
The flip distance marches along the unit signed gradient u (towards the decision threshold for a
classifier, uphill for a regression output) in 64 equal steps up to ``max_step`` and bisects the
first bracket to 2^-40 of a step: it is exact up to that resolution unless the output crosses and
re-crosses within one of the 64 steps.

Two-time. C(t_w, t) = theta(t_w) . theta(t) / (|theta(t_w)| |theta(t)|) and
Delta(t_w, t) = |theta(t) - theta(t_w)|^2 / n_params against snapshots taken at the waiting times.
"""
import math

import numpy as np
from numba import njit

from ..models.activations import derivative_layer
from ..models.multi import forward_outputs
from ..models.simple import MF_OUTPUT_SCALE, MI_ACTIVATION, MI_INPUT_DIM, MI_OFF_A, MI_OUTPUTS, MI_WIDTH, forward_outlined
from ..parallel import over_replicas

_MARCH_STEPS = 64
_BISECTIONS = 40


@njit(cache=True, error_model="numpy", inline="always")
def _input_gradient(theta, x, mi, mf, z, h, grad):
    """f(x) and grad[d] = d f / d x_d."""
    n_in, width, off_a = mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_A]
    f = forward_outlined(theta, x, mi, mf, z, h)
    derivative_layer(z, h, width, mi[MI_ACTIVATION])
    scale = mf[MF_OUTPUT_SCALE]
    for i in range(width):
        z[i] *= scale * theta[off_a + i]
    for d in range(n_in):
        acc = 0.0
        row = d * width
        for i in range(width):
            acc += z[i] * theta[row + i]
        grad[d] = acc
    return f


#: Public name for other compiled code (adversarial examples): f(x) and d f / d x of one replica.
input_gradient = _input_gradient


@njit(cache=True, error_model="numpy", inline="always")
def _crossed(f, f0, threshold, classify, margin):
    if classify:
        return (f >= threshold) != (f0 >= threshold)
    return abs(f - f0) >= margin


# Called, not inlined: a search that runs at record times.
@njit(cache=True, error_model="numpy")
def _flip_distance(theta, x0, u, f0, mi, mf, threshold, classify, max_step, margin, z, h, moved):
    n_in = x0.shape[0]
    delta = max_step / _MARCH_STEPS
    lo = 0.0
    for k in range(1, _MARCH_STEPS + 1):
        hi = k * delta
        for d in range(n_in):
            moved[d] = x0[d] + hi * u[d]
        if _crossed(forward_outlined(theta, moved, mi, mf, z, h), f0, threshold, classify, margin):
            for _ in range(_BISECTIONS):
                mid = 0.5 * (lo + hi)
                for d in range(n_in):
                    moved[d] = x0[d] + mid * u[d]
                if _crossed(forward_outlined(theta, moved, mi, mf, z, h), f0, threshold, classify, margin):
                    hi = mid
                else:
                    lo = mid
            return hi
        lo = hi
    return np.inf


def measure_representation(params, x_probe, mi, mf, threshold, classify, max_step, margin, spectrum, erank, pratio,
                           grad_norm, flip):
    """Fill the feature (if ``spectrum`` has a rank axis) and fragility (if ``grad_norm`` has a probe
    axis) observables of every replica. Two kernels, each compiled only when a run asks for it."""
    if spectrum.shape[1] > 0:
        over_replicas(_features, params.shape[0], params, x_probe, mi, mf, spectrum, erank, pratio)
    if grad_norm.shape[1] > 0:
        over_replicas(_fragility, params.shape[0], params, x_probe, mi, mf, threshold, classify, max_step, margin,
                      grad_norm, flip)


@njit(cache=True, error_model="numpy")
def probe_outputs(params, x_probe, mi, mf, out):
    """out[r, p, m] = f_m(x_p; theta_r): the network outputs (logits of a sigmoid loss) at every probe.

    Serial: a forward pass per probe and replica at record times only."""
    width, n_out = mi[MI_WIDTH], mi[MI_OUTPUTS]
    for r in range(params.shape[0]):
        z = np.empty(width)
        h = np.empty(width)
        for p in range(x_probe.shape[0]):
            if n_out == 1:
                out[r, p, 0] = forward_outlined(params[r], x_probe[p], mi, mf, z, h)
            else:
                forward_outputs(params[r], x_probe[p], mi, mf, z, h, out[r, p])


@njit(cache=True, error_model="numpy", nogil=True)
def _features(r0, r1, params, x_probe, mi, mf, spectrum, erank, pratio):
    width = mi[MI_WIDTH]
    n_probe = x_probe.shape[0]
    rank = spectrum.shape[1]
    for r in range(r0, r1):
        theta = params[r]
        z = np.empty(width)
        h = np.empty(width)
        hidden = np.empty((n_probe, width))
        for p in range(n_probe):
            forward_outlined(theta, x_probe[p], mi, mf, z, h)
            hidden[p] = h
        for i in range(width):
            mean = 0.0
            for p in range(n_probe):
                mean += hidden[p, i]
            mean /= n_probe
            for p in range(n_probe):
                hidden[p, i] -= mean
        gram = hidden @ hidden.T
        eig = np.linalg.eigvalsh(gram)  # ascending
        s_sum, lam_sum, lam_sq = 0.0, 0.0, 0.0
        for k in range(rank):
            lam = max(eig[n_probe - 1 - k], 0.0)
            spectrum[r, k] = math.sqrt(lam)
            s_sum += spectrum[r, k]
            lam_sum += lam
            lam_sq += lam * lam
        if s_sum > 0.0:
            entropy = 0.0
            for k in range(rank):
                pk = spectrum[r, k] / s_sum
                if pk > 0.0:
                    entropy -= pk * math.log(pk)
            erank[r] = math.exp(entropy)
            pratio[r] = lam_sum * lam_sum / lam_sq
        else:
            erank[r] = np.nan
            pratio[r] = np.nan


@njit(cache=True, error_model="numpy", nogil=True)
def _fragility(r0, r1, params, x_probe, mi, mf, threshold, classify, max_step, margin, grad_norm, flip):
    width, n_in = mi[MI_WIDTH], mi[MI_INPUT_DIM]
    n_probe = x_probe.shape[0]
    for r in range(r0, r1):
        theta = params[r]
        z = np.empty(width)
        h = np.empty(width)
        grad = np.empty(n_in)
        u = np.empty(n_in)
        moved = np.empty(n_in)
        for p in range(n_probe):
            f0 = _input_gradient(theta, x_probe[p], mi, mf, z, h, grad)
            norm = 0.0
            for d in range(n_in):
                norm += grad[d] * grad[d]
            norm = math.sqrt(norm)
            grad_norm[r, p] = norm
            if norm == 0.0 or not math.isfinite(norm):
                flip[r, p] = np.inf if norm == 0.0 else np.nan
                continue
            sign = 1.0
            if classify and f0 >= threshold:
                sign = -1.0  # towards the threshold
            for d in range(n_in):
                u[d] = sign * grad[d] / norm
            flip[r, p] = _flip_distance(theta, x_probe[p], u, f0, mi, mf, threshold, classify, max_step, margin,
                                        z, h, moved)


def two_time_update(params, snapshots, taken, autocorrelation, msd):
    """C and Delta of every replica against every snapshot already taken (NaN for the others)."""
    over_replicas(_two_time_update, params.shape[0], params, snapshots, taken, autocorrelation, msd)


@njit(cache=True, error_model="numpy", nogil=True)
def _two_time_update(r0, r1, params, snapshots, taken, autocorrelation, msd):
    dim = params.shape[1]
    n_waits = snapshots.shape[0]
    for r in range(r0, r1):
        theta = params[r]
        norm = 0.0
        for j in range(dim):
            norm += theta[j] * theta[j]
        for i in range(n_waits):
            if not taken[i]:
                autocorrelation[r, i] = np.nan
                msd[r, i] = np.nan
                continue
            old = snapshots[i, r]
            dot, norm_old, sq = 0.0, 0.0, 0.0
            for j in range(dim):
                dot += old[j] * theta[j]
                norm_old += old[j] * old[j]
                diff = theta[j] - old[j]
                sq += diff * diff
            autocorrelation[r, i] = dot / math.sqrt(norm * norm_old)
            msd[r, i] = sq / dim
