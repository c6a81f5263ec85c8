"""The CUDA backend: one GPU thread per replica, through numba.cuda (the ``numba-cuda`` package).

One definition of the math. The kernels contain no formulas of their own: a thread calls the
very ``numba.njit`` functions the CPU backend calls (``single_sample_step``/``batch_step``, and through them
``forward``, ``add_gradient``, the losses and the Philox draws of ``dynsim.rng``). numba.cuda
compiles a CPU dispatcher called inside a kernel as a device function from the same Python source
(``CUDATypingContext.resolve_value_type`` in numba-cuda's ``target.py``; the dispatcher's
``inline="always"`` is kept, ``cache=True`` only concerns the CPU target). The step loop and the
measure body repeat the per-replica loop bodies of the CPU kernels (``cpu._advance_single_sample``,
``cpu._advance_batch``, ``cpu._advance_sde``, ``observables._measure_losses`` and
``observables._measure_ntk_response``, which allocate with ``np.empty``, not allowed in a kernel),
with the same calls in the same order.
So the CPU and CUDA paths draw the same random numbers for the same (seed, replica, stream, step,
index) and compute the same trajectories.

Memory. During an ``advance`` call a thread keeps its replica's parameters and workspaces in
per-thread local memory (``cuda.local.array``, sized at compile time: one kernel is specialised
per (n_params, width, permutation length)); parameters are read at the start and written back at
the end. ``advance`` and ``measure`` follow the backend contract of ``CpuBackend``: given host
arrays they copy the parameters across the bus on every call. Given the device array returned by
``upload`` instead, the parameters stay on the GPU for the whole run and only the status flags
(one byte and one step number per replica) and the observables of each record cross the bus;
``download`` copies the parameters back for a checkpoint or the end of the run.

Observables are computed on the device, one thread per replica, in batches of replicas whose
scratch arrays fit ``measure_workspace_bytes``; each record is copied back into the caller's host
buffers.

Simulator. Under ``NUMBA_ENABLE_CUDASIM=1`` (read when numba.cuda is first imported) the kernels
run as Python threads on the CPU. Arrays reach a simulated kernel wrapped in simulator objects
that compiled functions cannot take; ``np.asarray`` inside the kernels unwraps them there (a view
that shares memory) and is the identity on a GPU.
"""
import functools
import math

import numpy as np

from ..integrators import INTEGRATORS, SAMPLING, SDE_CODE, TI_METHOD, TI_N_XI, TI_SAMPLING
from ..integrators.discrete import batch_step, is_single_sample, single_sample_step
from ..integrators.sde import WORK_ROWS, sde_step
from ..losses import loss_derivative
from ..models.simple import MI_DIM, MI_WIDTH, add_gradient, forward
from ..observables import _loss_and_accuracy
from ..spec import ConfigError
from .cpu import STATUS_NONFINITE, STATUS_OK

try:
    from numba import cuda
except ImportError as exc:  # numba-cuda present but broken (e.g. no CUDA Python bindings), or no CUDA target at all
    cuda = None
    _IMPORT_ERROR = str(exc)
else:
    _IMPORT_ERROR = ""

#: CUDA's limit on local memory per thread (CUDA C Programming Guide, "Technical Specifications").
LOCAL_MEMORY_LIMIT = 512 * 1024

_DISCRETE_CODES = frozenset(INTEGRATORS[name].code for name in ("gd", "sgd", "langevin"))
_WITHOUT_REPLACEMENT = SAMPLING["without_replacement"]
_KERNEL_OBSERVABLES = ("loss_train", "loss_test", "accuracy_train", "accuracy_test", "param_norm", "ntk", "response",
                       "response_linear")

_INSTALL_HINT = "pip install 'dynsim[cuda]' (which brings the numba-cuda package)"
_FALLBACK_HINT = ("use backend = 'cpu' in [run] (or dynsim run --backend cpu), or set NUMBA_ENABLE_CUDASIM=1 "
                  "before starting Python to run the CUDA kernels on numba's CPU simulator (slow; for tests)")


class CudaUnavailableError(ConfigError):
    """backend = 'cuda' was asked for, but there is no usable GPU, driver or numba-cuda."""

    def __init__(self, reason: str):
        super().__init__("run.backend", f"got 'cuda', but {reason}; {_FALLBACK_HINT}")


def simulator_active() -> bool:
    """True when numba.cuda is numba's CPU simulator (NUMBA_ENABLE_CUDASIM=1 at its first import)."""
    return cuda is not None and bool(cuda.config.ENABLE_CUDASIM)


def unavailable_reason() -> str:
    """Why the CUDA backend cannot run here, or '' when it can (on a GPU or on the simulator)."""
    if cuda is None:
        return f"numba.cuda cannot be imported ({_IMPORT_ERROR}); {_INSTALL_HINT}"
    if simulator_active():
        return ""
    if getattr(cuda, "implementation", "") != "NVIDIA":
        return ("only numba's deprecated built-in CUDA target is installed, not the maintained numba-cuda "
                f"package; {_INSTALL_HINT}")
    if not cuda.is_available():
        error = cuda.cuda_error()
        detail = " ".join(str(error).split()) if error is not None else "no CUDA-capable device was found"
        return f"no usable NVIDIA GPU and driver were found ({detail})"
    return ""


def device_name() -> str:
    """'cuda simulator', or the GPU's name and compute capability."""
    if simulator_active():
        return "cuda simulator"
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    major, minor = dev.compute_capability
    return f"{name} (compute capability {major}.{minor})"


def local_bytes(dim: int, width: int, n_perm: int) -> int:
    """Per-thread local memory of the advance kernel: theta, g [dim]; z, h [width]; perm; epoch."""
    return 8 * (2 * dim + 2 * width + max(n_perm, 1) + 1)


def local_bytes_sde(dim: int, width: int, n_xi: int) -> int:
    """Per-thread local memory of the SDE advance kernel: theta, g [dim]; z, h [width]; xi; work [5, dim]."""
    return 8 * (2 * dim + 2 * width + max(n_xi, 1) + 2 + WORK_ROWS * dim)


@functools.lru_cache(maxsize=None)
def _advance_kernel(dim: int, width: int, n_perm: int, n_xi: int = 0, sde: bool = False, single: bool = False):
    """The advance kernel with its local arrays sized for one model (sizes are compile-time).

    ``sde`` and ``single`` select the per-thread step: ``integrators.sde.sde_step`` (continuous time,
    noise draws ``xi`` and work rows), ``integrators.discrete.single_sample_step`` (SGD with one example
    per step) or ``integrators.discrete.batch_step`` (gradient ``g`` and the epoch permutation). They
    are compile-time constants, so each kernel holds one step, as each CPU kernel does.
    """
    n_perm = max(n_perm, 1)
    n_xi = max(n_xi, 1)
    rows = WORK_ROWS if sde else 1

    @cuda.jit
    def kernel(params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
        r = cuda.grid(1)
        params_, status_, failed_ = np.asarray(params), np.asarray(status), np.asarray(failed_step)
        if r >= params_.shape[0] or status_[r] != STATUS_OK:
            return
        theta = cuda.local.array(dim, np.float64)
        z = cuda.local.array(width, np.float64)
        h = cuda.local.array(width, np.float64)
        g = cuda.local.array(dim, np.float64)
        perm = cuda.local.array(n_perm, np.int64)
        perm_epoch = cuda.local.array(1, np.int64)
        perm_epoch[0] = -1
        xi = cuda.local.array(n_xi, np.float64)
        work = cuda.local.array((rows, dim), np.float64)
        for j in range(dim):
            theta[j] = params_[r, j]
        x_, y_ = np.asarray(x), np.asarray(y)
        mi_, mf_, ti_, tf_ = np.asarray(mi), np.asarray(mf), np.asarray(ti), np.asarray(tf)
        failed = -1
        for s in range(s0, s1):  # as on the CPU: stop at the first non-finite step, then check theta
            if sde:
                ok = sde_step(theta, x_, y_, mi_, mf_, ti_, tf_, seed, r, s, z, h, xi, work)
            elif single:
                ok = single_sample_step(theta, x_, y_, mi_, mf_, ti_, tf_, seed, r, s, z, h, perm, perm_epoch)
            else:
                ok = batch_step(theta, x_, y_, mi_, mf_, ti_, tf_, seed, r, s, z, h, g, perm, perm_epoch)
            if not ok:
                failed = s
                break
        if failed < 0:
            for j in range(dim):
                if not math.isfinite(theta[j]):
                    failed = s1
                    break
        for j in range(dim):
            params_[r, j] = theta[j]
        if failed >= 0:
            status_[r] = STATUS_NONFINITE
            failed_[r] = failed

    return kernel


@functools.lru_cache(maxsize=None)
def _measure_kernel():
    """The measure kernel: the per-replica bodies of ``observables._measure_losses`` and
    ``observables._ntk_and_response`` (the same calls of the same compiled functions, in the same
    order), its scratch arrays rows of global memory."""

    @cuda.jit
    def kernel(params, r0, x_train, y_train, x_test, y_test, x_probe, x_src, y_src, mi, mf, loss_code, eta,
               class_threshold, loss_train, loss_test, acc_train, acc_test, param_norm, ntk, response,
               response_linear, ws_z, ws_h, ws_grads, ws_f, ws_gsrc, ws_moved):
        i = cuda.grid(1)
        params_ = np.asarray(params)
        r = r0 + i
        if i >= ws_z.shape[0] or r >= params_.shape[0]:
            return
        theta = params_[r]
        mi_, mf_ = np.asarray(mi), np.asarray(mf)
        x_probe_, x_src_, y_src_ = np.asarray(x_probe), np.asarray(x_src), np.asarray(y_src)
        ntk_, response_, response_linear_ = np.asarray(ntk), np.asarray(response), np.asarray(response_linear)
        z, h = np.asarray(ws_z)[i], np.asarray(ws_h)[i]
        dim = mi_[MI_DIM]
        n_probe, n_src = x_probe_.shape[0], x_src_.shape[0]
        want_ntk = ntk_.shape[1] > 0
        want_response = response_.shape[1] > 0 or response_linear_.shape[1] > 0
        lt, at = _loss_and_accuracy(theta, np.asarray(x_train), np.asarray(y_train), mi_, mf_, loss_code,
                                    class_threshold, z, h)
        np.asarray(loss_train)[r] = lt
        np.asarray(acc_train)[r] = at
        lt, at = _loss_and_accuracy(theta, np.asarray(x_test), np.asarray(y_test), mi_, mf_, loss_code,
                                    class_threshold, z, h)
        np.asarray(loss_test)[r] = lt
        np.asarray(acc_test)[r] = at
        sq = 0.0
        for j in range(dim):
            sq += theta[j] * theta[j]
        np.asarray(param_norm)[r] = math.sqrt(sq)
        if not (want_ntk or want_response):
            return
        grads, f_probe = np.asarray(ws_grads)[i], np.asarray(ws_f)[i]
        for p in range(n_probe):
            for j in range(dim):
                grads[p, j] = 0.0
        for p in range(n_probe):
            f_probe[p] = forward(theta, x_probe_[p], mi_, mf_, z, h)
            add_gradient(theta, x_probe_[p], mi_, mf_, z, h, 1.0, grads[p])
        if want_ntk:
            for p in range(n_probe):
                for q in range(p, n_probe):
                    k = 0.0
                    for j in range(dim):
                        k += grads[p, j] * grads[q, j]
                    ntk_[r, p, q] = k
                    ntk_[r, q, p] = k
        if want_response:
            g_src, moved = np.asarray(ws_gsrc)[i], np.asarray(ws_moved)[i]
            for s in range(n_src):
                for j in range(dim):
                    g_src[j] = 0.0
                f_s = forward(theta, x_src_[s], mi_, mf_, z, h)
                add_gradient(theta, x_src_[s], mi_, mf_, z, h, 1.0, g_src)
                step = -eta * loss_derivative(f_s, y_src_[s], loss_code)
                for j in range(dim):
                    moved[j] = theta[j] + step * g_src[j]
                for p in range(n_probe):
                    k = 0.0
                    for j in range(dim):
                        k += grads[p, j] * g_src[j]
                    response_linear_[r, s, p] = step * k
                    response_[r, s, p] = forward(moved, x_probe_[p], mi_, mf_, z, h) - f_probe[p]

    return kernel


class CudaBackend:
    """Replicas as GPU threads; the same ``advance``/``measure`` contract as ``CpuBackend``."""

    name = "cuda"
    #: threads per block (a multiple of the warp size; local memory, not registers, holds the state)
    threads_per_block = 128
    #: device memory for the scratch arrays of one batch of the measure kernel
    measure_workspace_bytes = 256 * 2**20
    #: work per ``advance`` call (Simulation's unit: replica x sample x hidden unit x (inputs + 4)),
    #: about 5000 x the CPU's 2e8 so that a call lasts ~0.1-1 s on a current GPU (an estimate from
    #: the CPU rate, to be calibrated with benchmarks/gpu_w1.py)
    chunk_work = 1e12

    def __init__(self):
        reason = unavailable_reason()
        if reason:
            raise CudaUnavailableError(reason)
        self.device = device_name()
        self._data_host = None
        self._data_dev = None
        self._buffers_dev = {}
        self._workspace = {}

    # -- device residency --------------------------------------------------------------------------
    def upload(self, params: np.ndarray):
        """A device copy of ``params`` [replica, n_params]; pass it to ``advance``/``measure`` to keep
        the parameters on the GPU between calls."""
        return cuda.to_device(np.ascontiguousarray(params, dtype=np.float64))

    def download(self, device_params, out: np.ndarray | None = None) -> np.ndarray:
        """Copy device parameters back into ``out`` (or a new array) and return it."""
        if out is None:
            return device_params.copy_to_host()
        device_params.copy_to_host(out)
        return out

    def _device_params(self, params):
        if isinstance(params, np.ndarray):
            if params.dtype != np.float64 or params.ndim != 2 or not params.flags.c_contiguous:
                raise TypeError(f"params must be a C-contiguous float64 [replica, n_params] array; got "
                                f"{params.dtype} with shape {params.shape}")
            return cuda.to_device(params), True
        return params, False

    def _data(self, data):
        """The data set on the device, uploaded once per ``Dataset`` object (treated as immutable)."""
        if data is not self._data_host:
            arrays = (data.x_train, data.y_train, data.x_test, data.y_test, data.x_probe, data.x_source,
                      data.y_source)
            self._data_dev = tuple(cuda.to_device(np.ascontiguousarray(a, dtype=np.float64)) for a in arrays)
            self._data_host = data
        return self._data_dev

    # -- the backend contract ------------------------------------------------------------------------
    def advance(self, params, data, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
        """Advance every live replica from step s0 to s1 in place; flag non-finite ones in ``status``."""
        method = int(ti[TI_METHOD])
        if method not in _DISCRETE_CODES and method != SDE_CODE:
            raise ConfigError("training.method", "the CUDA backend runs gd, sgd, langevin and sde only; "
                                                 "use backend = 'cpu'")
        dim, width = int(mi[MI_DIM]), int(mi[MI_WIDTH])
        if method == SDE_CODE:
            n_xi = int(ti[TI_N_XI])
            need, what = local_bytes_sde(dim, width, n_xi), f"{n_xi} noise draws and 5 work rows"
            kernel = _advance_kernel(dim, width, 0, n_xi, True)
        else:
            n_perm = data.x_train.shape[0] if int(ti[TI_SAMPLING]) == _WITHOUT_REPLACEMENT else 0
            need, what = local_bytes(dim, width, n_perm), f"{n_perm} permutation entries"
            kernel = _advance_kernel(dim, width, n_perm, single=is_single_sample(ti))
        if need > LOCAL_MEMORY_LIMIT:
            raise ConfigError("model.width", f"a replica needs {need} bytes of per-thread local memory on the CUDA "
                                             f"backend (n_params = {dim}, width = {width}, {what}); "
                                             f"CUDA allows {LOCAL_MEMORY_LIMIT}: use backend = 'cpu'")
        dev_params, copy_back = self._device_params(params)
        replicas = dev_params.shape[0]
        if replicas == 0 or s1 <= s0:
            return
        x, y = self._data(data)[:2]
        dev_status = status if not isinstance(status, np.ndarray) else cuda.to_device(status)
        dev_failed = failed_step if not isinstance(failed_step, np.ndarray) else cuda.to_device(failed_step)
        tpb = min(self.threads_per_block, replicas)
        kernel[(replicas + tpb - 1) // tpb, tpb](dev_params, x, y, cuda.to_device(mi), cuda.to_device(mf),
                                                   cuda.to_device(ti), cuda.to_device(tf), np.uint64(seed),
                                                   int(s0), int(s1), dev_status, dev_failed)
        if copy_back:
            dev_params.copy_to_host(params)
        if dev_status is not status:
            dev_status.copy_to_host(status)
        if dev_failed is not failed_step:
            dev_failed.copy_to_host(failed_step)

    def measure(self, params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility=None):
        """Fill the host ``buffers`` (from ``observables.allocate``) for every replica.

        ``fragility`` is unused: the CPU-only observables it configures are refused for this backend."""
        dev_params, _ = self._device_params(params)
        replicas = dev_params.shape[0]
        dim, width = int(mi[MI_DIM]), int(mi[MI_WIDTH])
        x_train, y_train, x_test, y_test, x_probe, x_src, y_src = self._data(data)
        n_probe = x_probe.shape[0]
        # only the observables the measure kernel fills; the others (features, fragility, two-time)
        # are filled on the host by the engine and must not be overwritten here
        out = {name: self._device_buffer(name, buffers[name]) for name in _KERNEL_OBSERVABLES}
        gradients = out["ntk"].shape[1] > 0 or out["response"].shape[1] > 0 or out["response_linear"].shape[1] > 0
        per_replica = 8 * (2 * width + n_probe + (n_probe * dim + 2 * dim if gradients else 0))
        batch = int(min(replicas, max(self.threads_per_block, self.measure_workspace_bytes // per_replica)))
        ws = self._scratch(batch, width, n_probe, dim if gradients else 0)
        tpb = min(self.threads_per_block, batch)
        kernel = _measure_kernel()
        mi_d, mf_d = cuda.to_device(mi), cuda.to_device(mf)
        for r0 in range(0, replicas, batch):
            kernel[(batch + tpb - 1) // tpb, tpb](
                dev_params, r0, x_train, y_train, x_test, y_test, x_probe, x_src, y_src, mi_d, mf_d, int(loss_code),
                float(eta), float(class_threshold), out["loss_train"], out["loss_test"], out["accuracy_train"],
                out["accuracy_test"], out["param_norm"], out["ntk"], out["response"], out["response_linear"], *ws)
        for name in _KERNEL_OBSERVABLES:
            if buffers[name].size:
                out[name].copy_to_host(buffers[name])

    def _device_buffer(self, name, host):
        key = (name, host.shape)
        if key not in self._buffers_dev:
            self._buffers_dev[key] = cuda.device_array(host.shape, dtype=np.float64)
        return self._buffers_dev[key]

    def _scratch(self, batch, width, n_probe, dim):
        """z, h [batch, width], grads [batch, probe, dim], f_probe [batch, probe], g_src, moved [batch, dim]."""
        key = (batch, width, n_probe, dim)
        if key not in self._workspace:
            self._workspace = {key: (cuda.device_array((batch, width)), cuda.device_array((batch, width)),
                                     cuda.device_array((batch, n_probe if dim else 0, dim)),
                                     cuda.device_array((batch, n_probe)), cuda.device_array((batch, dim)),
                                     cuda.device_array((batch, dim)))}
        return self._workspace[key]
