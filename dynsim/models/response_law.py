"""The response-law model: the theory's own dynamics of the network's function.

The training response factorises into an aging amplitude times a kernel (../shared/papers/nakazato.md),
R_t(x; x_s) = -eta A(t) K(x, x_s) l'(f_t(x_s), y_s). Taken as the dynamics itself, with the batch
B_t of the trainer (all samples for GD, the same Philox draws as the network's SGD for the same
seed and replica), the function on a grid of inputs advances as

    f_{t+1,m}(x) = f_{t,m}(x) - (eta A(t) / B) sum_{s in B_t} sum_n K_mn(x, x_s) l'(f_{t,n}(x_s), y_{s,n})

for every output m (the loss of M outputs is the sum of the per-output losses, as for the network).
The grid is the training inputs, then the test inputs, then the probes, so that the state of one
replica is f [grid, M] and its first P rows are the training outputs the loss reads.

Kernels (``kernel``): the empirical NTK of each replica's own initial network (``ntk_init``: with a
constant amplitude this is the linearised network, ``dynsim.theory.lazy``), the infinite-width NTK
of the network at initialisation (``ntk_infinite``, from ``dynsim.theory.kernels``), the empirical
NTK of a run file's recorded parameters at a chosen step (``ntk_file``, rescaled to that run's
initial NTK trace so that the amplitude sets its size), or a parametric kernel of the distance
(``gaussian``, ``exponential``) or the arc-cosine kernel of order 1 on (x, 1) (``arccos``). The
parametric and infinite-width kernels act on each output alone (K_mn = delta_mn k); the empirical
NTKs keep their cross-output terms.

Amplitudes (``amplitude``), at time t = step * eta: ``constant`` A0, ``power_law``
A0 (1 + t / tau)^-beta, or ``file``: A0 times the run file's own NTK amplitude (mean diagonal of its
recorded NTK on the probes) relative to its value at t = 0, per replica, interpolated linearly in
log(1 + t) between the file's records.

``initial``: ``network`` starts every replica from the function of the simple network with the same
[model] parameters and seed (dynsim's initialisation, replica by replica); ``zero`` from f = 0.
"""
import dataclasses
import math

import numpy as np
from numba import njit

from ..integrators.discrete import batch_member
from ..losses import loss_derivative, loss_value
from ..spec import option
from .multi import evaluate_outputs, output_jacobians
from .simple import SimpleNet

LAW = "response_law"
KERNELS = ("ntk_init", "ntk_infinite", "ntk_file", "gaussian", "exponential", "arccos")
PARAMETRIC_KERNELS = ("gaussian", "exponential", "arccos")
AMPLITUDES = ("constant", "power_law", "file")
INITIAL = ("network", "zero")

# Positions in the integer array the compiled kernels take.
LI_OUTPUTS, LI_BATCH, LI_SAMPLING, LI_LOSS, LI_TRAIN = range(5)
STATUS_OK, STATUS_NONFINITE = 0, 1


@dataclasses.dataclass(frozen=True)
class ResponseLawModel(SimpleNet):
    """[model] of a response-law run: the law's kernel and amplitude, and the simple network (the
    keys it shares with ``SimpleNet``) whose initial function and NTK the law uses where asked."""
    SECTION = "model"
    kind: str = option(LAW, "str", "network family: the response-law model of the simple network",
                       choices=(LAW,))
    kernel: str = option("ntk_init", "str", "the kernel K: ntk_init (each replica's own initial NTK: the lazy "
                                            "network), ntk_infinite (the infinite-width NTK), ntk_file (a run "
                                            "file's NTK at kernel_step), gaussian, exponential, arccos",
                         choices=KERNELS)
    kernel_scale: float = option(1.0, "float", "gaussian/exponential/arccos: the kernel's value scale k0",
                                 minimum=0.0, exclusive_minimum=True)
    length_scale: float = option(0.1, "float", "gaussian/exponential: the length l (input units)", minimum=0.0,
                                 exclusive_minimum=True)
    kernel_step: int = option(None, "int", "ntk_file: the step whose recorded parameters give the kernel (the "
                                           "nearest record; default: the last)", minimum=0, optional=True)
    amplitude: str = option("constant", "str", "the amplitude A(t): constant, power_law or file",
                            choices=AMPLITUDES)
    amplitude_scale: float = option(1.0, "float", "A0: the amplitude at t = 0 (a factor on the file's for 'file')",
                                    minimum=0.0, exclusive_minimum=True)
    amplitude_tau: float = option(1.0, "float", "power_law: tau in A0 (1 + t / tau)^-beta (time units, t = step * "
                                                "eta)", minimum=0.0, exclusive_minimum=True)
    amplitude_beta: float = option(0.0, "float", "power_law: the aging exponent beta", minimum=0.0)
    initial: str = option("network", "str", "initial function: the simple network's with the same seed, or zero",
                          choices=INITIAL)
    reference_file: str = option(None, "str", "a run file of the simple network on the same data and seed: the "
                                              "source of ntk_file and of the 'file' amplitude, and the network the "
                                              "report compares the law with", optional=True)

    def check(self):
        if self.kernel == "ntk_file" or self.amplitude == "file":
            if not self.reference_file:
                which = "kernel = 'ntk_file'" if self.kernel == "ntk_file" else "amplitude = 'file'"
                self.fail("reference_file", f"{which} reads a run file: set reference_file = \"runs/NAME.h5\" (a "
                                            "simple-network run on the same data and seed)")
        if self.kernel_step is not None and self.kernel != "ntk_file":
            self.fail("kernel_step", f"got {self.kernel_step}; only kernel = 'ntk_file' uses it: remove it")
        if self.amplitude != "power_law":
            for name in ("amplitude_tau", "amplitude_beta"):
                if getattr(self, name) != type(self).__dataclass_fields__[name].default:
                    self.fail(name, f"got {getattr(self, name)}; only amplitude = 'power_law' uses it: remove it "
                                    "or set amplitude = 'power_law'")
        if self.kernel not in PARAMETRIC_KERNELS:
            for name in ("kernel_scale", "length_scale"):
                if getattr(self, name) != type(self).__dataclass_fields__[name].default:
                    self.fail(name, f"got {getattr(self, name)}; only a parametric kernel (gaussian, exponential, "
                                    "arccos) uses it: remove it or change model.kernel")

    @property
    def network(self) -> SimpleNet:
        """The simple network the law describes (its initial function and NTK)."""
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(SimpleNet) if f.name != "kind"}
        return SimpleNet(**shared)

    @property
    def per_replica_kernel(self) -> bool:
        return self.kernel in ("ntk_init", "ntk_file")

    def attributes(self) -> dict:
        out = dict(kind=LAW, input_dim=self.input_dim, outputs=self.outputs, kernel=self.kernel,
                   amplitude=self.amplitude, amplitude_scale=self.amplitude_scale, initial=self.initial,
                   formula="f_{t+1,m}(x) = f_{t,m}(x) - (eta A(t) / B) sum_{s in batch} sum_n K_mn(x, x_s) "
                           "l'(f_{t,n}(x_s), y_s,n)",
                   state="f [grid, outputs] on grid = training inputs, test inputs, probes")
        if self.amplitude == "power_law":
            out.update(amplitude_tau=self.amplitude_tau, amplitude_beta=self.amplitude_beta)
        if self.kernel in PARAMETRIC_KERNELS:
            out.update(kernel_scale=self.kernel_scale)
            if self.kernel != "arccos":
                out.update(length_scale=self.length_scale)
        if self.kernel.startswith("ntk") or self.initial == "network":
            out.update(network_width=self.width, network_activation=self.activation, network_scaling=self.scaling)
        if self.reference_file:
            out.update(reference_file=self.reference_file)
        return out


# -- kernels (set-up, NumPy) --------------------------------------------------------------------------------
def parametric_kernel(name: str, x1, x2, scale: float, length: float) -> np.ndarray:
    """k(x1_a, x2_b) [K1, K2] of a parametric kernel (module docstring)."""
    x1, x2 = np.asarray(x1, dtype=np.float64), np.asarray(x2, dtype=np.float64)
    if name == "arccos":  # Cho & Saul's order-1 arc-cosine kernel on (x, 1): the infinite relu layer
        a, b = np.column_stack([x1, np.ones(len(x1))]), np.column_stack([x2, np.ones(len(x2))])
        na, nb = np.linalg.norm(a, axis=1)[:, None], np.linalg.norm(b, axis=1)[None, :]
        angle = np.arccos(np.clip(a @ b.T / (na * nb), -1.0, 1.0))
        return scale * na * nb * (np.sin(angle) + (np.pi - angle) * np.cos(angle)) / np.pi
    sq = np.maximum(np.sum(x1 ** 2, axis=1)[:, None] + np.sum(x2 ** 2, axis=1)[None, :] - 2.0 * x1 @ x2.T, 0.0)
    if name == "gaussian":
        return scale * np.exp(-sq / (2.0 * length ** 2))
    if name == "exponential":
        return scale * np.exp(-np.sqrt(sq) / length)
    raise ValueError(f"unknown parametric kernel {name!r}; allowed: {', '.join(PARAMETRIC_KERNELS)}")


def network_ntk(network: SimpleNet, theta, x1, x2) -> np.ndarray:
    """Theta_mn(x1_a, x2_b) [K1, K2, M, M]: the empirical NTK of M outputs of one replica (any M)."""
    j1 = output_jacobians(network, theta, np.asarray(x1, dtype=np.float64))
    j2 = output_jacobians(network, theta, np.asarray(x2, dtype=np.float64))
    return np.einsum("amp,bnp->abmn", j1, j2)


def network_function(network: SimpleNet, theta, x) -> np.ndarray:
    """f_m(x_k) [K, M] of one replica of the simple network (any M)."""
    return evaluate_outputs(network, theta, np.asarray(x, dtype=np.float64))


def amplitude_of(model: ResponseLawModel, times: np.ndarray, file_times=None, file_amplitude=None) -> np.ndarray:
    """A(t) [rows, len(times)] (one row, or one per replica for 'file'; module docstring)."""
    t = np.asarray(times, dtype=np.float64)
    if model.amplitude == "constant":
        return np.full((1, t.size), model.amplitude_scale)
    if model.amplitude == "power_law":
        return (model.amplitude_scale * (1.0 + t / model.amplitude_tau) ** -model.amplitude_beta)[None, :]
    grid = np.log1p(np.asarray(file_times, dtype=np.float64))
    ratio = np.asarray(file_amplitude, dtype=np.float64)  # [replica, record], 1 at t = 0
    return model.amplitude_scale * np.stack([np.interp(np.log1p(t), grid, row) for row in ratio])


# -- the compiled dynamics ----------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy", nogil=True)
def advance_law(r0, r1, f, kern, y, amp, li, eta, seed, s0, s1, status, failed_step):
    """Advance replicas r0..r1 of the law from step s0 to s1, f [replica, grid * M] in place.

    kern [1 or replica, grid, P, M, M]; y [P * M]; amp [1 or replica, s1 - s0] the amplitude at each
    step; a replica whose loss gradient turns non-finite is flagged in status / failed_step and stops.
    """
    n_out, batch, sampling, loss_code, n_train = li[LI_OUTPUTS], li[LI_BATCH], li[LI_SAMPLING], li[LI_LOSS], li[LI_TRAIN]
    n_grid = f.shape[1] // n_out
    count = n_train if sampling == 0 else batch
    index = np.empty(count, dtype=np.int64)
    dl = np.empty((count, n_out))
    perm = np.empty(n_train if sampling == 2 else 0, dtype=np.int64)
    perm_epoch = np.empty(1, dtype=np.int64)
    for r in range(r0, r1):
        if status[r] != STATUS_OK:
            continue
        k = r if kern.shape[0] > 1 else 0
        ka = r if amp.shape[0] > 1 else 0
        perm_epoch[0] = -1
        fr = f[r]
        for s in range(s0, s1):
            finite = True
            for b in range(count):
                mu = batch_member(seed, r, s, b, batch, n_train, sampling, perm, perm_epoch)
                index[b] = mu
                for n in range(n_out):
                    d = loss_derivative(fr[mu * n_out + n], y[mu * n_out + n], loss_code)
                    dl[b, n] = d
                    if not math.isfinite(d):
                        finite = False
            if not finite:
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
            coef = eta * amp[ka, s - s0] / batch
            for x in range(n_grid):
                for m in range(n_out):
                    acc = 0.0
                    for b in range(count):
                        row = kern[k, x, index[b]]
                        for n in range(n_out):
                            acc += row[m, n] * dl[b, n]
                    fr[x * n_out + m] -= coef * acc


@njit(cache=True, error_model="numpy", nogil=True)
def measure_law(r0, r1, f, kern, kern_test, y_train, y_test, n_test, probe0, source_index, amp, li, eta,
                class_threshold, loss_train, loss_test, acc_train, acc_test, output, response, late_response):
    """Losses, accuracies, probe outputs and responses of replicas r0..r1 (each left alone when empty).

    f [replica, grid * M] on grid = training inputs, ``n_test`` test inputs, then probes from row
    ``probe0``; response [replica, source, probe, M]: -eta A(t) sum_n K_mn(x_p, x_s) l'_n(f(x_s), y_s);
    amp [1 or replica] the amplitude now; late_response [replica, test] (when not empty): the first-order
    response of one step on each never-trained test sample x_k at itself, eta A(t) |sum_n K_mn(x_k, x_k)
    l'_n(f(x_k), y_k)| (the norm over outputs m), from kern_test [1 or replica, test, M, M] = K(x_k, x_k).
    """
    n_out, loss_code, n_train = li[LI_OUTPUTS], li[LI_LOSS], li[LI_TRAIN]
    n_probe = output.shape[1]
    for r in range(r0, r1):
        fr = f[r]
        k = r if kern.shape[0] > 1 else 0
        a = amp[r] if amp.shape[0] > 1 else amp[0]
        for which in range(2):
            n = n_train if which == 0 else n_test
            first = 0 if which == 0 else n_train
            y = y_train if which == 0 else y_test
            total, correct = 0.0, 0
            for mu in range(n):
                best, target = 0, 0
                for m in range(n_out):
                    v = fr[(first + mu) * n_out + m]
                    total += loss_value(v, y[mu * n_out + m], loss_code)
                    if v > fr[(first + mu) * n_out + best]:
                        best = m
                    if y[mu * n_out + m] > y[mu * n_out + target]:
                        target = m
                if n_out == 1:
                    v, t = fr[(first + mu) * n_out], y[mu * n_out]
                    if (v >= class_threshold) == (t >= class_threshold):
                        correct += 1
                elif best == target:
                    correct += 1
            if which == 0:
                loss_train[r] = total / n if n else np.nan
                acc_train[r] = correct / n if n else np.nan
            else:
                loss_test[r] = total / n if n else np.nan
                acc_test[r] = correct / n if n else np.nan
        for p in range(n_probe):
            for m in range(n_out):
                output[r, p, m] = fr[(probe0 + p) * n_out + m]
        for j in range(response.shape[1]):
            s = source_index[j]
            for p in range(response.shape[2]):
                for m in range(n_out):
                    acc = 0.0
                    for n in range(n_out):
                        acc += kern[k, probe0 + p, s, m, n] * loss_derivative(fr[s * n_out + n], y_train[s * n_out + n],
                                                                           loss_code)
                    response[r, j, p, m] = -eta * a * acc
        for j in range(late_response.shape[1]):
            sq = 0.0
            for m in range(n_out):
                acc = 0.0
                for n in range(n_out):
                    g = (n_train + j) * n_out + n
                    acc += kern_test[k, j, m, n] * loss_derivative(fr[g], y_test[j * n_out + n], loss_code)
                sq += acc * acc
            late_response[r, j] = eta * a * math.sqrt(sq)
