"""The time loop shared by every time-stepped kind of experiment: runner -> backend kernels -> store.

``TimeLoop`` alternates a runner's compiled ``advance`` calls (between record times, split into
chunks for progress and checkpoints) with its compiled ``measure`` calls, whose buffers go to the
store; it owns checkpoints, divergence, interrupts and resume. A kind's runner (for example
``dynsim.simple_experiment.Simulation``) is the thin Python shell that validates, builds the data,
packs model and trainer into plain arrays and allocates; neither computes physics itself. The
engine imports no kind: kinds import it.
"""
import dataclasses
import abc
import datetime
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ..config import results_digest
from ..spec import ConfigError
from ..store import (DATA_NAMES, STATUS_COMPLETED, STATUS_DIVERGED, STATUS_INTERRUPTED, RunReader, RunWriter,
                     StoreError, WriterLock, check_free_space_for_copy)
from .cpu import STATUS_NONFINITE, STATUS_OK, CpuBackend
from ..observables.representation import two_time_update



@dataclasses.dataclass
class RunResult:
    path: str
    code: str
    message: str
    last_step: int
    params: np.ndarray
    failed_replicas: np.ndarray
    written: bool = True  # False when the command had nothing to do (resuming a complete file)

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


class TimeLoop(abc.ABC):
    """The shared time loop of every time-stepped kind of experiment (``dynsim.experiment``).

    A kind's runner subclasses it, calls ``__init__`` with what the loop and the store need, and
    provides four methods: ``initial_params()`` ([replica, n_params]), ``allocate_buffers()`` (one
    record's observables), ``advance(params, s0, s1, status, failed_step)`` (compiled steps s0..s1
    in place; status and failed_step flag non-finite replicas) and ``measure(params, buffers)``.
    The loop owns the record schedule, chunking, checkpoints, divergence, interrupts and the file.
    """

    def __init__(self, config, *, backend, data, record_steps, chunk_steps, waits=None, lags=None):
        """``config``: resolved; ``data``: the ``dynsim.tasks.Dataset`` the file's header stores;
        ``waits``/``lags``: the two-time grid in steps (none by default)."""
        empty = np.zeros(0, dtype=np.int64)
        self.config = config
        self.backend = backend
        self.data = data
        self.waits = empty if waits is None else waits
        self.lags = empty if lags is None else lags
        self.record_steps = record_steps
        self.chunk_steps = int(chunk_steps)

    @abc.abstractmethod
    def initial_params(self) -> np.ndarray:
        """See the class docstring."""

    @abc.abstractmethod
    def allocate_buffers(self) -> dict:
        """See the class docstring."""

    @abc.abstractmethod
    def advance(self, params, s0, s1, status, failed_step):
        """See the class docstring."""

    @abc.abstractmethod
    def measure(self, params, buffers):
        """See the class docstring."""

    @property
    def trajectory_replicas(self) -> int:
        """Replicas whose parameters are recorded with every record (``[record] params``)."""
        record = self.config.record
        return record.recorded_params(self.config.run.replicas) if hasattr(record, "recorded_params") else 0

    def named_inputs(self) -> dict:
        """{name: (array, description, axis names)} of inputs the kind's measurements use beyond its
        data set, stored as ``/inputs/NAME`` (none by default)."""
        return {}

    @property
    def host_observables(self) -> bool:
        """True when some observables need a host copy of the parameters (``measure_on_host``)."""
        return False

    def measure_on_host(self, host_params, buffers):
        """Only called when ``host_observables`` is true: a runner that says so provides it."""
        raise NotImplementedError(f"{type(self).__name__} reports host_observables but has no measure_on_host")

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

    def memory_needed(self) -> int:
        """Bytes the loop will hold: the parameters (with their host copy, the snapshots of the two-time
        grid and a checkpoint's worth of slack) and one record's buffers."""
        cfg = self.config
        replicas = cfg.run.replicas
        n_params = int(cfg.model_attributes().get("n_params", 0))
        itemsize = np.dtype(getattr(cfg.run, "dtype", np.float64)).itemsize
        sizes = cfg.dim_sizes(self.data.x_probe.shape[0], self.data.x_source.shape[0], len(self.waits))
        specs = cfg.observable_specs()
        per_replica = sum(int(np.prod([sizes[d] for d in specs[n].dims], dtype=np.int64)) for n in cfg.observables)
        return replicas * (n_params * itemsize * (3 + len(self.waits)) + per_replica * 8)

    def check_memory(self):
        """Refuse, naming the number, a run whose arrays cannot fit in this machine's memory (instead
        of a failed allocation, or swapping, after the file was created)."""
        need = self.memory_needed()
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if need > 0.8 * total:
            raise ConfigError("run.replicas", f"got {self.config.run.replicas}: the run needs about "
                                              f"{need / 2**30:.1f} GiB of memory and this machine has "
                                              f"{total / 2**30:.1f} GiB; lower run.replicas (or the recorded "
                                              "observables), or split the ensemble over a sweep of run.seed")

    def run(self, path, *, overwrite=False, progress=None) -> RunResult:
        """Train from initialisation to ``run.steps`` and write ``path``."""
        cfg = self.config
        self.check_memory()
        params = self.initial_params()
        writer = RunWriter(path, config=cfg, data=self.data, params_initial=params,
                           observables=cfg.observables, backend=self.backend.name, device=self.backend.device,
                           overwrite=overwrite, history=f"created by dynsim run at {_now()}",
                           two_time=(self.waits, self.lags), inputs=self.named_inputs(),
                           trajectory_replicas=self.trajectory_replicas)
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
        policy = CheckpointPolicy(cfg.run.steps, cfg.record.checkpoint_seconds, cfg.record.checkpoint_steps,
                                  chunk_steps=self.chunk_steps, param_bytes=params.nbytes)

        def checkpoint():
            started = time.monotonic()
            writer.checkpoint(step, host(), failed_step)
            policy.done(started, time.monotonic())

        def host():
            if work is not params:
                self.backend.download(work, params)
            return params
        try:
            for target in self.record_steps[first_record:]:
                while step < target:
                    next_checkpoint = policy.next_step(step)
                    s1 = min(int(target), step + self.chunk_steps, next_checkpoint)
                    self.advance(work, step, s1, status, failed_step)
                    if cfg.run.on_divergence == "stop" and np.any(status != STATUS_OK):
                        bar.close()
                        return self._diverged(writer, host(), status, failed_step, step, stopped=True)
                    bar.update(s1 - step)
                    step = s1
                    if step == next_checkpoint or policy.due_by_time(time.monotonic()):
                        checkpoint()
                    _check_stop()
                self.measure(work, buffers)
                if self.host_observables:  # CPU-only observables of a CUDA run, on the host copy
                    self.measure_on_host(host(), buffers)
                if len(self.waits):
                    self.two_time(step, host(), snapshots, writer, buffers)
                blank_diverged(buffers, status)
                writer.append(step, step * time_step, buffers, host() if writer.trajectory_replicas else None)
                if writer.block_full:
                    checkpoint()
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
        if writer.records_total < cfg.record.n_records:
            message += (f" (record.n_records = {cfg.record.n_records}: {cfg.record.spacing}-spaced record steps "
                        "that fall on the same step are recorded once)")
        writer.finish(step, params, STATUS_COMPLETED, message)
        return RunResult(str(writer.path), STATUS_COMPLETED, message, step, params, np.zeros(0, dtype=np.int64))

    def _diverged(self, writer, params, status, failed_step, step, *, stopped) -> RunResult:
        bad = np.flatnonzero(status != STATUS_OK)
        first = bad[np.argmin(failed_step[bad])]
        where = f"replica {first} at step {failed_step[first]}"
        if stopped:
            message = (f"diverged: non-finite loss gradient or parameters in {where} "
                       f"({bad.size} replica(s) affected); run stopped, records up to step {step} kept")
        elif bad.size == len(status):
            message = (f"diverged: every replica ({bad.size}) frozen after a non-finite loss, first {where}; "
                       f"none trained to step {step}")
        else:
            message = (f"diverged: {bad.size} replica(s) frozen after non-finite loss, first {where}; "
                       f"the others completed {step} steps")
        writer.finish(step, params, STATUS_DIVERGED, message, replica=int(first), failed_step=int(failed_step[first]),
                      replica_failed_step=failed_step)
        return RunResult(str(writer.path), STATUS_DIVERGED, message, step, params, bad)


_COPY_RECORDS = 256  # records copied per block on resume


class CheckpointPolicy:
    """When the time loop checkpoints, besides every block write.

    A kill loses the work since the last checkpoint, which the defaults bound twice, whichever comes
    first:

    * by steps: every ``record.checkpoint_steps``, by default every ``RUN_FRACTION`` (5 %) of the
      run, at exactly those steps (chunks end there), so that where checkpoints fall is part of the
      run, not of the machine. The default interval is widened, from the config alone, to as many
      chunks as keep checkpoints under ``MAX_OVERHEAD`` (1 %) of the compute: a checkpoint costs
      about ``FIXED_SECONDS`` plus the parameters at ``WRITE_BYTES_PER_S``, a chunk at least
      ``CHUNK_SECONDS`` (both measured on a 2-core machine, benchmarks/RESULTS.md, 2026-12-04). A
      W1-sized run of a quarter of a second therefore checkpoints only at its block writes.
    * by wall time: at most ``record.checkpoint_seconds`` (10 s), checked after each chunk, and
      only once at least ``1 / MAX_OVERHEAD`` times the last checkpoint's duration has passed
      (``checkpoint_seconds = 0``: after every chunk, whatever it costs).
    """

    RUN_FRACTION = 0.05
    MAX_OVERHEAD = 0.01
    FIXED_SECONDS = 2e-3
    WRITE_BYTES_PER_S = 2e8
    CHUNK_SECONDS = 0.1

    def __init__(self, steps: int, seconds: float, checkpoint_steps=None, *, chunk_steps: int = 1,
                 param_bytes: int = 0, now: float | None = None):
        self.seconds = seconds
        if checkpoint_steps:
            self.every = int(checkpoint_steps)
        else:
            cost = self.FIXED_SECONDS + param_bytes / self.WRITE_BYTES_PER_S
            chunks = math.ceil(cost / (self.MAX_OVERHEAD * self.CHUNK_SECONDS))
            self.every = max(math.ceil(steps * self.RUN_FRACTION), chunks * max(1, int(chunk_steps)))
        self.last_time = time.monotonic() if now is None else now
        self.last_cost = 0.0

    def next_step(self, step: int) -> int:
        """The next step after ``step`` at which a checkpoint is due by steps."""
        return (step // self.every + 1) * self.every

    def due_by_time(self, now: float) -> bool:
        if self.seconds == 0:  # asked for explicitly: a checkpoint after every chunk, whatever it costs
            return True
        elapsed = now - self.last_time
        return elapsed > self.seconds and elapsed >= self.last_cost / self.MAX_OVERHEAD

    def done(self, started: float, ended: float):
        self.last_time, self.last_cost = ended, ended - started


def blank_diverged(buffers: dict, status: np.ndarray):
    """Store NaN, never inf or a frozen replica's stale values, for a replica that has diverged: one
    flagged by the kernels (non-finite gradient or parameters; its step is in /status), or whose
    training loss is no longer finite at this record. Analysis then leaves exactly those out."""
    gone = status != STATUS_OK
    loss = buffers.get("loss_train")
    if loss is not None and loss.shape[:1] == gone.shape:
        gone = gone | ~np.isfinite(loss)
    if gone.any():
        for values in buffers.values():
            if values.shape[:1] == gone.shape and values.dtype.kind == "f":
                values[gone] = np.nan


def resume_time_loop(path, *, parse_config, make_runner, progress=None, expect_config=None) -> RunResult:
    """Continue an interrupted or killed run to its configured end, bit-identically.

    ``parse_config(text, source)`` and ``make_runner(config)`` are the file's kind's (a ``TimeLoop``
    subclass builds the runner); ``dynsim.kinds.resume`` finds them from the file.

    The committed prefix of the file (records up to its last checkpoint) is rebuilt through the
    normal writer into ``PATH.resume-tmp``, which then atomically replaces ``PATH``; the run goes
    on from the checkpoint. The original is never modified in place, so a crash during resume
    loses nothing either. With ``expect_config``, a file made from a different config is refused.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    lock = WriterLock(path).acquire()  # before anything is read or written: one writer per file
    try:
        with RunReader(path) as reader:
            prepared = _prepare_resume(path, reader, parse_config, make_runner, expect_config, lock)
    except BaseException:
        lock.release()
        raise
    if isinstance(prepared, RunResult):  # nothing to do
        lock.release()
        return prepared
    sim, writer, tmp, ck, n_done, snapshots = prepared
    os.replace(tmp, path)  # atomic: PATH is the old file or the complete copy, never a mixture
    writer.path = path
    try:
        return sim._loop(writer, ck["params"].copy(), ck["replica_failed_step"].copy(), ck["step"], n_done, progress,
                         snapshots)
    finally:
        writer.close()


def _prepare_resume(path, reader, parse_config, make_runner, expect_config, lock):
    """Check the file against its config and rebuild its committed prefix into PATH.resume-tmp;
    a ``RunResult`` instead when there is nothing to resume."""
    config = parse_config(reader.config_text, f"{path}:/config")
    if expect_config is not None and results_digest(expect_config) != results_digest(config):
        raise StoreError(f"{path} was made with a different config (sha256 {reader.config_digest[:12]}..., "
                         f"given {expect_config.digest()[:12]}...); refusing to resume it with this one")
    status = reader.status
    if status["code"] == STATUS_COMPLETED:
        return RunResult(str(path), STATUS_COMPLETED, f"{path} is already complete; nothing to resume",
                         status["last_step"], reader.dataset("params/final"), np.zeros(0, dtype=np.int64),
                         written=False)
    if status["code"] == STATUS_DIVERGED:
        raise StoreError(f"{path} diverged ({status['message']}); resuming would diverge again: "
                         "change the config and start a new run")
    sim = make_runner(config)
    try:
        stored = reader.data()
        stored_inputs = reader.inputs()
        initial = reader.dataset("params/initial")
        ck = reader.checkpoint
        n_done = ck["n_records"]
        steps = reader.file["time/step"][:n_done]
        missing = [f"observables/{name}" for name in config.observables if name not in reader.file["observables"]]
        if len(sim.waits) and "two_time/theta_w" not in reader.file:
            missing.append("two_time/theta_w")
        if sim.trajectory_replicas and reader.trajectory_replicas != sim.trajectory_replicas:
            missing.append("trajectory/params")
    except KeyError as exc:
        raise StoreError(f"{path} is damaged, it cannot be resumed: {exc}; rerun it from its config") from None
    if missing:
        raise StoreError(f"{path} is damaged, it cannot be resumed: '/{missing[0]}' is missing; "
                         "rerun it from its config")
    for name in DATA_NAMES + ("x_probe", "source_index"):
        if not np.array_equal(getattr(stored, name), getattr(sim.data, name)):
            raise StoreError(f"{path}: this dynsim version generates different task data ({name}) from the "
                             "same config; resume with the version that wrote the file")
    if stored_inputs.keys() != sim.named_inputs().keys() or any(
            not np.array_equal(stored_inputs[name], values) for name, (values, *_) in sim.named_inputs().items()):
        raise StoreError(f"{path}: this dynsim version generates different inputs (/inputs) from the same "
                         "config; resume with the version that wrote the file")
    if not np.array_equal(initial, sim.initial_params()):
        raise StoreError(f"{path}: this dynsim version draws different initial parameters; "
                         "resume with the version that wrote the file")
    if not np.array_equal(steps, sim.record_steps[:n_done]):
        raise StoreError(f"{path}: its record steps do not follow the config's schedule; cannot resume")
    check_free_space_for_copy(path)
    history = str(reader.attrs.get("history", ""))
    tmp = path.with_name(path.name + ".resume-tmp")
    writer = RunWriter(tmp, config=config, data=stored, params_initial=initial, observables=config.observables,
                       backend=sim.backend.name, device=sim.backend.device, overwrite=True,
                       history=f"{history}; resumed at step {ck['step']} at {_now()}",
                       two_time=(sim.waits, sim.lags), inputs=sim.named_inputs(), lock=lock,
                       trajectory_replicas=sim.trajectory_replicas)
    snapshots = np.full((len(sim.waits),) + initial.shape, np.nan, dtype=initial.dtype)
    try:
        for k0 in range(0, n_done, _COPY_RECORDS):
            k1 = min(n_done, k0 + _COPY_RECORDS)
            arrays = {n: reader.file["observables"][n][k0:k1] for n in config.observables}
            if writer.trajectory_replicas:
                arrays["trajectory/params"] = reader.trajectory(slice(k0, k1))
            writer.write_records(steps[k0:k1], reader.file["time/t"][k0:k1], arrays)
        for i in np.flatnonzero(sim.waits <= ck["step"]):
            snapshots[i] = reader.file["two_time/theta_w"][i]
            writer.write_snapshot(int(i), snapshots[i])
        writer.checkpoint(ck["step"], ck["params"], ck["replica_failed_step"])
    except BaseException:
        writer.lock = None  # the caller releases it
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return sim, writer, tmp, ck, n_done, snapshots


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _progress_bar(total: int, initial: int, progress):
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    return tqdm(total=total, initial=initial, unit="step", unit_scale=True, disable=not enabled,
                dynamic_ncols=True, desc="dynsim", leave=False)


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
