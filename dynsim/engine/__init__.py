"""The time loop: config -> (model, data, trainer, schedule) -> backend kernels -> store.

``Simulation`` is the thin Python shell: it validates, builds the data, packs the model and trainer
into plain arrays, allocates, and then alternates compiled ``advance`` calls (between record
times, split into chunks for progress and checkpoints) with compiled ``measure`` calls whose
buffers go to the store. It never computes physics itself.
"""
import dataclasses
import datetime
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..integrators import SCHEMES
from ..losses import LOSSES
from ..observables import allocate
from ..spec import ConfigError
from ..store import STATUS_COMPLETED, STATUS_DIVERGED, STATUS_INTERRUPTED, RunReader, RunWriter, StoreError
from ..tasks import make_dataset
from .cpu import STATUS_NONFINITE, STATUS_OK, CpuBackend
from ..observables import OBSERVABLES
from ..observables import measure_on_host
from ..observables.representation import two_time_update
from .schedule import schedule, two_time_grid

# Work per chunk, in units of (replica x sample x hidden unit x input): about 0.1-0.5 s of compute.
_CHUNK_WORK = 2e8
_MEASURE_BLOCK = 16384  # replicas per float64 block when measuring a float32 run


@dataclasses.dataclass
class RunResult:
    path: str
    code: str
    message: str
    last_step: int
    params: np.ndarray
    failed_replicas: np.ndarray

    @property
    def ok(self) -> bool:
        return self.code == STATUS_COMPLETED


def get_backend(name: str):
    if name == "cpu":
        return CpuBackend()
    if name == "cuda":
        from .cuda import CudaBackend  # numba.cuda is imported only when asked for

        return CudaBackend()  # CudaUnavailableError (a ConfigError) without GPU, driver or numba-cuda
    raise ConfigError("run.backend", f"got {name!r}; allowed: 'cpu', 'cuda'")


class Simulation:
    """A configured ensemble, ready to run."""

    def __init__(self, config):
        self.config = config.resolved()
        cfg = self.config
        self.backend = get_backend(cfg.run.backend)
        self.data = make_dataset(cfg.task, cfg.model.input_dim, cfg.model.activation, cfg.run.seed,
                                 outputs=cfg.model.outputs)
        self.model_ints, self.model_floats = cfg.model.kernel_arrays()
        self.trainer_ints, self.trainer_floats = cfg.training.kernel_arrays(cfg.task.n_train, cfg.model.n_params)
        self.waits, self.lags = two_time_grid(cfg.run.steps, cfg.record.two_time_waits, cfg.record.two_time_lags)
        self.record_steps = schedule(cfg.run.steps, cfg.record.n_records, cfg.record.spacing, self.waits, self.lags)
        self.fragility = (int(cfg.task.is_classification), cfg.record.fragility_max_step,
                          cfg.record.fragility_margin)

        self.loss_code = LOSSES[cfg.training.loss]
        self.class_threshold = 0.5 if cfg.task.labels == "01" else 0.0
        batch = cfg.training.effective_batch(cfg.task.n_train)
        if cfg.training.method == "sde":  # every stage is a full-batch gradient
            batch = cfg.task.n_train * SCHEMES[cfg.training.scheme].stages
        work = cfg.run.replicas * batch * cfg.model.width * (cfg.model.input_dim + 4)
        self.chunk_steps = int(max(1, getattr(self.backend, "chunk_work", _CHUNK_WORK) // max(work, 1)))

    def initial_params(self) -> np.ndarray:
        return self.config.model.init_params(self.config.run.seed, self.config.run.replicas, self.config.run.dtype)

    def allocate_buffers(self) -> dict:
        """One record's buffers of every recorded observable."""
        cfg = self.config
        return allocate(cfg.observables, cfg.run.replicas, self.data.x_probe.shape[0], self.data.x_source.shape[0],
                        cfg.model.width, len(self.waits), cfg.model.outputs)

    def advance(self, params, s0, s1, status, failed_step):
        self.backend.advance(params, self.data, self.model_ints, self.model_floats, self.trainer_ints,
                             self.trainer_floats, self.config.run.seed, s0, s1, status, failed_step)

    def measure(self, params, buffers):
        if params.dtype != np.float64:
            self._measure_in_float64(params, buffers)
            return
        self.backend.measure(params, self.data, self.model_ints, self.model_floats, self.loss_code,
                             self.config.training.eta, self.class_threshold, buffers, fragility=self.fragility)

    def _measure_in_float64(self, params, buffers):
        """Observables of a float32 run: computed in float64 from its parameters, a block of replicas
        at a time, by the float64 kernels (no float32 copies of them to compile, and no float64 copy of
        a large ensemble: a block is at most _MEASURE_BLOCK replicas)."""
        for r0 in range(0, params.shape[0], _MEASURE_BLOCK):
            r1 = min(params.shape[0], r0 + _MEASURE_BLOCK)
            block = {name: values[r0:r1] for name, values in buffers.items()}
            self.backend.measure(params[r0:r1].astype(np.float64), self.data, self.model_ints, self.model_floats,
                                 self.loss_code, self.config.training.eta, self.class_threshold, block,
                                 fragility=self.fragility)

    @property
    def host_observables(self) -> bool:
        """CPU-only observables on a backend without kernels for them: computed from a host copy."""
        return self.backend.name != "cpu" and any(OBSERVABLES[n].cpu_only for n in self.config.observables)

    def measure_on_host(self, host_params, buffers):
        measure_on_host(host_params, self.data, self.model_ints, self.model_floats, self.class_threshold, buffers,
                        self.fragility)

    def two_time(self, step, host_params, snapshots, writer, buffers):
        """At a record: take the snapshot if ``step`` is a waiting time, then C and Delta against all taken."""
        hit = np.flatnonzero(self.waits == step)
        if hit.size:
            snapshots[hit[0]] = host_params
            writer.write_snapshot(int(hit[0]), host_params)
        two_time_update(host_params, snapshots, self.waits <= step, buffers["autocorrelation"], buffers["msd"])

    def warm_up(self, work, status, failed_step, step, buffers, snapshots):
        """Compile (or load from the cache) the kernels the time loop calls, before it starts: an
        advance of zero steps, the observables of the first replica and its two-time quantities into
        slices of the buffers (overwritten at the first record). On a CUDA backend the measure kernel
        still compiles at the first record.

        The class's methods are called, not the instance's attributes: the loop's chunks are its
        ``advance`` calls (a wrapper set on the instance sees those), and a zero-step call is not one.
        """
        kind = type(self)
        kind.advance(self, work, step, step, status, failed_step)
        if self.backend.name == "cpu":
            kind.measure(self, work[:1], {name: values[:1] for name, values in buffers.items()})
        if len(self.waits):
            # arrays of the loop's own types (host parameters [1, dim], every snapshot); no wait taken
            none_taken = np.zeros(len(self.waits), dtype=bool)
            two_time_update(snapshots[0, :1], snapshots, none_taken, buffers["autocorrelation"][:1],
                            buffers["msd"][:1])

    def run(self, path, *, overwrite=False, progress=None) -> RunResult:
        """Train from initialisation to ``run.steps`` and write ``path``."""
        cfg = self.config
        params = self.initial_params()
        writer = RunWriter(path, config=cfg, data=self.data, params_initial=params,
                           observables=cfg.observables, backend=self.backend.name, device=self.backend.device,
                           overwrite=overwrite, history=f"created by dynsim run at {_now()}",
                           two_time=(self.waits, self.lags))
        failed_step = np.full(cfg.run.replicas, -1, dtype=np.int64)
        snapshots = np.full((len(self.waits),) + params.shape, np.nan, dtype=params.dtype)
        try:
            return self._loop(writer, params, failed_step, 0, 0, progress, snapshots)
        finally:
            writer.close()

    def _loop(self, writer, params, failed_step, step, first_record, progress, snapshots) -> RunResult:
        """Advance from ``step`` through the record schedule from ``first_record`` on."""
        cfg = self.config
        time_step = cfg.training.time_step
        status = np.where(failed_step >= 0, STATUS_NONFINITE, STATUS_OK).astype(np.int8)
        buffers = self.allocate_buffers()
        # a backend with upload/download (CUDA) keeps the parameters on its device for the whole
        # run; they come back to the host only for checkpoints and the end of the run
        work = self.backend.upload(params) if hasattr(self.backend, "upload") else params
        self.warm_up(work, status, failed_step, step, buffers, snapshots)
        # the bar starts after the kernels are compiled (or loaded), so that its rate and ETA are true
        bar = _progress_bar(cfg.run.steps, step, progress)
        last_checkpoint = time.monotonic()
        every = cfg.record.checkpoint_steps or cfg.run.steps + 1

        def host():
            if work is not params:
                self.backend.download(work, params)
            return params
        try:
            for target in self.record_steps[first_record:]:
                while step < target:
                    next_checkpoint = (step // every + 1) * every
                    s1 = min(int(target), step + self.chunk_steps, next_checkpoint)
                    self.advance(work, step, s1, status, failed_step)
                    if cfg.run.on_divergence == "stop" and np.any(status != STATUS_OK):
                        bar.close()
                        return self._diverged(writer, host(), status, failed_step, step, stopped=True)
                    bar.update(s1 - step)
                    step = s1
                    if (step == next_checkpoint
                            or time.monotonic() - last_checkpoint > cfg.record.checkpoint_seconds):
                        writer.checkpoint(step, host(), failed_step)
                        last_checkpoint = time.monotonic()
                    _check_stop()
                self.measure(work, buffers)
                if self.host_observables:  # CPU-only observables of a CUDA run, on the host copy
                    self.measure_on_host(host(), buffers)
                if len(self.waits):
                    self.two_time(step, host(), snapshots, writer, buffers)
                writer.append(step, step * time_step, buffers)
                if writer.block_full:
                    writer.checkpoint(step, host(), failed_step)
                    last_checkpoint = time.monotonic()
                _check_stop()
        except KeyboardInterrupt:
            bar.close()
            message = f"interrupted at step {step}; records up to there are kept ('dynsim resume' continues)"
            writer.finish(step, host(), STATUS_INTERRUPTED, message, replica_failed_step=failed_step)
            return RunResult(str(writer.path), STATUS_INTERRUPTED, message, step, params,
                             np.flatnonzero(status))
        bar.close()
        host()
        if np.any(status != STATUS_OK):
            return self._diverged(writer, params, status, failed_step, step, stopped=False)
        message = f"completed {step} steps, {writer.records_total} records"
        writer.finish(step, params, STATUS_COMPLETED, message)
        return RunResult(str(writer.path), STATUS_COMPLETED, message, step, params, np.zeros(0, dtype=np.int64))

    def _diverged(self, writer, params, status, failed_step, step, *, stopped) -> RunResult:
        bad = np.flatnonzero(status != STATUS_OK)
        first = bad[np.argmin(failed_step[bad])]
        where = f"replica {first} at step {failed_step[first]}"
        if stopped:
            message = (f"diverged: non-finite loss gradient or parameters in {where} "
                       f"({bad.size} replica(s) affected); run stopped, records up to step {step} kept")
        else:
            message = (f"diverged: {bad.size} replica(s) frozen after non-finite loss, first {where}; "
                       f"the others completed {step} steps")
        writer.finish(step, params, STATUS_DIVERGED, message, replica=int(first), failed_step=int(failed_step[first]),
                      replica_failed_step=failed_step)
        return RunResult(str(writer.path), STATUS_DIVERGED, message, step, params, bad)


_COPY_RECORDS = 256  # records copied per block on resume


def resume(path, *, progress=None, expect_config=None) -> RunResult:
    """Continue an interrupted or killed run to its configured end, bit-identically.

    The committed prefix of the file (records up to its last checkpoint) is rebuilt through the
    normal writer into ``PATH.resume-tmp``, which then atomically replaces ``PATH``; the run goes
    on from the checkpoint. The original is never modified in place, so a crash during resume
    loses nothing either. With ``expect_config``, a file made from a different config is refused.
    """
    path = Path(path)
    with RunReader(path) as reader:
        if expect_config is not None and expect_config.digest() != reader.config_digest:
            raise StoreError(f"{path} was made with a different config (sha256 {reader.config_digest[:12]}..., "
                             f"given {expect_config.digest()[:12]}...); refusing to resume it with this one")
        status = reader.status
        if status["code"] == STATUS_COMPLETED:
            return RunResult(str(path), STATUS_COMPLETED, f"{path} is already complete; nothing to resume",
                             status["last_step"], reader.dataset("params/final"), np.zeros(0, dtype=np.int64))
        if status["code"] == STATUS_DIVERGED:
            raise StoreError(f"{path} diverged ({status['message']}); resuming would diverge again: "
                             "change the config and start a new run")
        config = reader.config()
        sim = make_simulation(config)
        stored = reader.data()
        for name in ("x_train", "y_train", "x_test", "y_test", "x_probe", "source_index"):
            if not np.array_equal(getattr(stored, name), getattr(sim.data, name)):
                raise StoreError(f"{path}: this dynsim version generates different task data ({name}) from the "
                                 "same config; resume with the version that wrote the file")
        initial = reader.dataset("params/initial")
        if not np.array_equal(initial, sim.initial_params()):
            raise StoreError(f"{path}: this dynsim version draws different initial parameters; "
                             "resume with the version that wrote the file")
        ck = reader.checkpoint
        n_done = ck["n_records"]
        steps = reader.file["time/step"][:n_done]
        if not np.array_equal(steps, sim.record_steps[:n_done]):
            raise StoreError(f"{path}: its record steps do not follow the config's schedule; cannot resume")
        history = str(reader.attrs.get("history", ""))
        tmp = path.with_name(path.name + ".resume-tmp")
        writer = RunWriter(tmp, config=config, data=stored, params_initial=initial, observables=config.observables,
                           backend=sim.backend.name, device=sim.backend.device, overwrite=True,
                           history=f"{history}; resumed at step {ck['step']} at {_now()}",
                           two_time=(sim.waits, sim.lags))
        snapshots = np.full((len(sim.waits),) + initial.shape, np.nan, dtype=initial.dtype)
        try:
            for k0 in range(0, n_done, _COPY_RECORDS):
                k1 = min(n_done, k0 + _COPY_RECORDS)
                writer.write_records(steps[k0:k1], reader.file["time/t"][k0:k1],
                                     {n: reader.file["observables"][n][k0:k1] for n in config.observables})
            for i in np.flatnonzero(sim.waits <= ck["step"]):
                snapshots[i] = reader.file["two_time/theta_w"][i]
                writer.write_snapshot(int(i), snapshots[i])
            writer.checkpoint(ck["step"], ck["params"], ck["replica_failed_step"])
        except BaseException:
            writer.close()
            tmp.unlink(missing_ok=True)
            raise
    os.replace(tmp, path)  # atomic: PATH is the old file or the complete copy, never a mixture
    writer.path = path
    try:
        return sim._loop(writer, ck["params"].copy(), ck["replica_failed_step"].copy(), ck["step"], n_done, progress,
                         snapshots)
    finally:
        writer.close()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _progress_bar(total: int, initial: int, progress):
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, desc="dynsim", leave=False)


def make_simulation(config) -> Simulation:
    """The simulation of a config: ``Simulation``, or ``DeepSimulation`` for a deep MLP (``[model] kind = "mlp"``)."""
    if getattr(config, "EXPERIMENT", "simple") == "mlp":
        from ..deep_experiment import DeepSimulation

        return DeepSimulation(config)
    return Simulation(config)


def run(config, path, **kwargs) -> RunResult:
    """Run ``config`` (a ``Config`` or ``DeepConfig``) and write ``path``; see ``Simulation.run``."""
    return make_simulation(config).run(path, **kwargs)


# SIGTERM (batch schedulers' pre-emption) and Ctrl-C only set a flag; the time loop checks it
# where step and parameters agree (after a chunk, after a record) and stops there cleanly. Raising
# from the handler could land between a finished chunk and the step counter's update, and the
# checkpoint would then pair parameters with the wrong step.
_STOP_REQUESTED = threading.Event()


def _request_stop(signum, frame):
    _STOP_REQUESTED.set()


def install_signal_handlers():
    _STOP_REQUESTED.clear()
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)


def _check_stop():
    if _STOP_REQUESTED.is_set():
        _STOP_REQUESTED.clear()
        raise KeyboardInterrupt


#: For other long jobs (the chain experiment): KeyboardInterrupt once SIGINT/SIGTERM was received.
raise_if_stop_requested = _check_stop
