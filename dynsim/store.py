"""The HDF5 schema of dynsim's files: the only module that knows group and dataset names.

Three layouts: a run (time series of observables, ``RunWriter`` / ``RunReader``; every time-stepped
kind), a max-norm chain file (``ChainWriter`` / ``ChainReader``) and a merged sweep file
(``write_sweep_file``, ``sweep_points``), each described where it is written. ``file_kind`` reads
which kind of experiment wrote a file; the store itself imports no kind.

Layout (format_version 1)::

    /                       attrs: format="dynsim", format_version, kind (the kind of experiment, [model] kind),
                            dynsim_version, created, git_commit, python/numpy/numba/h5py versions, backend,
                            device, n_replicas, n_params, history
    /config                 dataset: resolved config as TOML text; attrs: sha256
    /model                  attrs: kind, activation, input_dim, width, outputs (M), output_scale, param_layout
                            (a:outputs,width and c:outputs when M > 1), ...
    /training               attrs: method, eta, batch_size, loss, seed, steps, replicas, ...
    /data/x_train, y_train, x_test, y_test
    /probes/x               [probe, input_dim]
    /sources/x, y, index    [source, input_dim], [source], [source] (index into the training set)
    /inputs/NAME            a kind's own named inputs (attrs: description, dims); the deep MLP: noise_x
                            [probe, input_dim] (axis 'probe'), basin_index [source] (axis 'source')
    /time/step, /time/t     [record]; t = step * time_step (eta, or the sde trainer's dt)
    /observables/NAME       [record, replica, ...] attrs: units, description, dims; resizable along record;
                            dimension scales /observables/{record,replica,probe,probe2,source,rank,wait,
                            output_index,output_index2} (M outputs: output [probe, output_index], ntk_outputs,
                            response_outputs carry the output indices)
    /two_time/t_w, tau      [t_w], [tau] in steps (t_w_time, tau_time: in t); only with record.two_time_waits > 0
    /two_time/theta_w       [t_w, replica, n_params]: theta at each waiting time (written when reached)
    /two_time/autocorrelation, msd   [t_w, tau, replica] (filled at the end; RunReader.two_time reads
                            them from the records while the run is going)
    /two_time/ntk, response, response_linear   [t_w, replica, ...]: their records at t = t_w
    /trajectory/params      [record, replica, n_params]: theta of the first replicas at every record, with
                            [record] params = true | N (chunked by record, the record datasets' filter)
    /params/initial         [replica, n_params]
    /params/final           [replica, n_params] (NaN until the run ends)
    /checkpoint/params      [2, replica, n_params]  two slots, written alternately
                            (all parameter arrays in the run's precision, float64 or float32: run.precision)
    /checkpoint/step, n_records [2]; /checkpoint/replica_failed_step [2, replica]
    /checkpoint/active      scalar: the slot of the last complete checkpoint (-1: none yet)
    /status/code, message   fixed-length strings; /status/last_step, replica, failed_step (scalars)
    /status/n_records       scalar: records committed (complete in every dataset)
    /status/replica_failed_step [replica]: the step at which each replica diverged (-1: never)

Crash safety. The header is written first; then the file switches to HDF5 SWMR mode, in which
the library orders its metadata writes so that the file on disk is valid at every instant, and
in which only existing datasets are written or extended (so everything above is created up
front). Records are appended in blocks, then committed by writing ``/status/n_records``.
A checkpoint fills the inactive slot, then flips ``/checkpoint/active``: one small write is the
commit point, so a kill at any moment leaves one complete checkpoint and a known number of
complete records. Readers only ever show committed records.
"""
import datetime
import hashlib
import errno
import fcntl
import functools
import json
import os
import socket
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from .version import __version__
from .observables import OBSERVABLES

FORMAT = "dynsim"
FORMAT_VERSION = 1

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_DIVERGED = "diverged"
STATUS_INTERRUPTED = "interrupted"

# The root attribute ``experiment`` names the file's layout (absent in run files of format 1);
# the root attribute ``kind`` names the kind of experiment that wrote it (``dynsim.kinds``).
LAYOUT_RUN = "run"

_CHUNK_BYTES = 1 << 20
_CODE_BYTES, _MESSAGE_BYTES = 32, 1024
_LIBVER = "latest"  # SWMR needs the v110 file format


class StoreError(Exception):
    """A file that is not a (complete enough) dynsim run, or cannot be written."""


def _git_commit() -> str:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else "unknown (not run from a git checkout)"


def _versions() -> dict:
    import numba

    return dict(dynsim_version=__version__, python_version=sys.version.split()[0], numpy_version=np.__version__,
                numba_version=numba.__version__, h5py_version=h5py.__version__, hdf5_version=h5py.version.hdf5_version)


def _chunks(replicas: int, inner: tuple[int, ...], block: int) -> tuple[int, ...]:
    """Chunk shape of about 1 MiB: whole inner dims, as many replicas and records as fit."""
    per_replica = 8 * int(np.prod(inner, dtype=np.int64)) if inner else 8
    per_replica = max(per_replica, 8)
    reps = max(1, min(replicas, _CHUNK_BYTES // per_replica))
    recs = max(1, min(block, _CHUNK_BYTES // (per_replica * reps)))
    return (recs, reps) + tuple(max(1, d) for d in inner)


# -- one writer per file ---------------------------------------------------------------------------
def writer_identity() -> dict:
    """Who writes a file: host, process id and start time (stored in the lock file and the file)."""
    return dict(host=socket.gethostname(), pid=os.getpid(),
                started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _verify_config(path, node):
    """A file's header is only as good as its config: refuse one whose /config text does not match
    the sha256 stored with it (an empty or overwritten header)."""
    raw = node["config"][()]
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    stored = str(node["config"].attrs.get("sha256", ""))
    if hashlib.sha256(text.encode()).hexdigest() != stored:
        raise StoreError(f"{path} has a damaged header: its /config does not match the sha256 stored with it "
                         f"({len(text)} characters); the file cannot be trusted: rerun it from its config")


def _describe_writer(identity: dict) -> str:
    return f"pid {identity.get('pid', '?')} on {identity.get('host', '?')}, started {identity.get('started', '?')}"


class WriterLock:
    """The one-writer-per-file rule: an exclusive ``flock`` on ``PATH.lock``, taken before a writer
    creates, truncates or replaces anything (``run``, ``run --overwrite``, ``resume``) and held
    until it closes. A second writer is refused at once, naming the first; nothing is changed.

    The lock file says who holds it (``writer_identity``). It is removed on release while still
    locked, and an acquirer checks after locking that the file it locked is still the one at the
    path, so that a release racing an acquire cannot leave two holders. A killed writer's lock
    file stays behind, unlocked (the kernel drops the lock with the process): harmless.
    """

    def __init__(self, path):
        self.target = Path(path)
        self.path = _lock_path(self.target)
        self.fd = None

    def acquire(self) -> "WriterLock":
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_identity(fd)
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from None
                raise StoreError(f"{self.target} is being written by another dynsim process "
                                 f"({_describe_writer(holder)}); nothing was changed: wait for it to end, or stop "
                                 "it (Ctrl-C or SIGTERM) and 'dynsim resume' the file") from None
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)  # locked a lock file its holder had just removed: lock the new one
        self.identity = writer_identity()
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(self.identity).encode())
        self.fd = fd
        return self

    def release(self):
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc):
        self.release()


def _read_identity(fd) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {}


def writer_state(path, attrs: dict) -> str:
    """For a file whose status is 'running': is its writer alive? From the writer's host and pid
    (in the file and its lock file); a pid can only be checked on its own host."""
    path = Path(path)
    host, pid = attrs.get("writer_host"), attrs.get("writer_pid")
    if host is None or pid is None:
        return "running, or its writer was stopped (a file written before writers were recorded)"
    host, pid = str(host), int(pid)
    if host != socket.gethostname():
        return f"running, or stopped (written by pid {pid} on {host}; its process cannot be checked from here)"
    alive = _lock_path(path).exists() and _pid_alive(pid)
    if alive:
        return f"running (pid {pid} on {host})"
    return "interrupted (writer gone): 'dynsim resume' continues it from its last checkpoint"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the header every file kind shares: root attributes, /config, /status code and message --------
#: the scalar status datasets of a run file (code and message are strings): written and read as a set
RUN_STATUS_SCALARS = ("last_step", "replica", "failed_step", "n_records")
#: the training and test data of a run file (/data/NAME), as ``dynsim.tasks.Dataset`` fields
DATA_NAMES = ("x_train", "y_train", "x_test", "y_test")
#: the two-time grid's axes (in steps and in t) and its [t_w, tau, replica] quantities
TWO_TIME_AXES = ("t_w", "tau", "t_w_time", "tau_time")
TWO_TIME_GRIDS = ("autocorrelation", "msd")


def _write_shared_header(f, config, *, layout: str | None, n_replicas: int, backend: str, device: str, writer: dict,
                         **extra):
    """Root attributes (the writer's identity among them), ``/config`` (TOML text with its sha256) and
    an empty ``/status`` code and message."""
    attrs = dict(format=FORMAT, format_version=FORMAT_VERSION, kind=type(config).KIND,
                 writer_host=writer["host"], writer_pid=writer["pid"], writer_started=writer["started"],
                 created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 git_commit=_git_commit(), backend=backend, device=device, n_replicas=n_replicas, **extra,
                 **_versions())
    if layout is not None:
        attrs["experiment"] = layout
    f.attrs.update(attrs)
    f.create_dataset("config", data=config.to_toml(), dtype=h5py.string_dtype())
    f["config"].attrs["sha256"] = config.digest()
    st = f.create_group("status")
    st.create_dataset("code", data=np.bytes_(b""), dtype=f"S{_CODE_BYTES}")
    st.create_dataset("message", data=np.bytes_(b""), dtype=f"S{_MESSAGE_BYTES}")
    return st


def _write_status_text(f, code: str, message: str):
    st = f["status"]
    st["code"][()] = np.bytes_(code.encode()[:_CODE_BYTES])
    st["message"][()] = np.bytes_(message.encode()[:_MESSAGE_BYTES])


def _read_status_text(f) -> dict:
    st = f["status"]
    return dict(code=st["code"][()].decode(), message=st["message"][()].decode())


def format_bytes(n: float) -> str:
    """Sizes as people read them: MB below a GiB, GiB above."""
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{max(n, 0) / 1e6:.1f} MB"


def check_free_space_for_copy(path, action: str = "resume") -> None:
    """``resume`` (and ``repair``) build a copy of a file under a temporary name before replacing it:
    refuse at once, naming the sizes, when the disk cannot hold that copy (at most the file's size)."""
    path = Path(path)
    need = path.stat().st_size + (1 << 20)
    free = shutil.disk_usage(path.parent).free
    if need > free:
        raise StoreError(f"{action} of {path} builds a copy of it first and needs about {format_bytes(need)} free, "
                         f"but {path.parent} has {format_bytes(free)}; free some space and {action} again (the file "
                         "is unchanged)")


def _hdf5_reason(text: str) -> str:
    """The operating system's words inside an HDF5 error message ('No space left on device')."""
    marker = "error message = '"
    if marker in text:
        return text.split(marker, 1)[1].split("'", 1)[0]
    return text.splitlines()[0] if text else "I/O error"


def _abandon_creation(writer):
    """Undo a writer's creation that failed (RunWriter, ChainWriter): close what was opened, remove the
    temporary file, release the lock; the path is as it was."""
    if writer.file is not None and writer.file.id.valid:
        try:
            writer.file.close()
        except (OSError, RuntimeError):
            pass
    writer.path.with_name(writer.path.name + ".partial").unlink(missing_ok=True)
    writer.lock.release()


def _what_is_kept(writer) -> str:
    kept = getattr(writer, "last_checkpoint", None)
    return (f"it keeps its last checkpoint (step {kept[0]}, {kept[1]} records)" if kept
            else "it keeps what was committed")


def _ensure_room(writer, need: int):
    """Refuse a write that cannot fit before any byte of it is written: a write that fails half way
    leaves HDF5 unable even to close the file cleanly, while the file on disk is still at its last
    commit; refusing first keeps both the file and the process sound."""
    free = shutil.disk_usage(writer.path.parent).free
    if need > free:
        raise StoreError(f"the disk holding {writer.path} is full: {format_bytes(free)} free, the next write needs "
                         f"about {format_bytes(need)}; {_what_is_kept(writer)}: free some space, then 'dynsim resume {writer.path}'")


_WRITE_SLACK = 1 << 20  # HDF5 metadata, chunk index growth, the status and checkpoint writes
_TRAJECTORY = "trajectory/params"


def _io_guarded(method):
    """A writer's write: an ``OSError`` (disk full, a vanished mount, quota) becomes one
    ``StoreError`` that names the file, the free space and what is kept, raised once; the writer is
    marked failed so that closing it does not try to write again."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        if getattr(self, "_failed", False):
            raise StoreError(f"{self.path}: an earlier write failed; nothing more is written to it")
        try:
            return method(self, *args, **kwargs)
        except (OSError, RuntimeError) as exc:  # h5py reports a failed write or flush as either
            self._failed = True
            try:
                free = format_bytes(shutil.disk_usage(self.path.parent).free)
            except OSError:
                free = "unknown"
            where = _what_is_kept(self)
            reason = getattr(exc, "strerror", None) or _hdf5_reason(str(exc))
            raise StoreError(f"writing {self.path} failed: {reason} ({free} free on its disk); {where}: free some "
                             f"space, then 'dynsim resume {self.path}'") from None
    return guarded


class RunWriter:
    """Creates a run file and appends records, checkpoints and status to it (SWMR mode)."""

    def __init__(self, path, *, config, data, params_initial, observables, backend="cpu", device="cpu",
                 overwrite=False, history="", two_time=None, inputs=None, lock=None, trajectory_replicas=0,
                 provenance=None):
        """``inputs``: {name: (array, description, dims)} of a kind's own named inputs, stored as
        ``/inputs/NAME`` with the names of its axes (the deep MLP's noise inputs and basin samples). ``lock``: a held
        ``WriterLock`` to keep until ``close`` (resume builds its copy under another name while
        holding the lock of the file it replaces); by default the writer locks ``path`` itself.
        ``trajectory_replicas``: record the parameters of that many (the first) replicas with every
        record (``/trajectory/params``). ``provenance``: extra root attributes (``dynsim measure``
        names the run it measured)."""
        self.path = Path(path)
        self.file = None
        _prepare_output(self.path, overwrite=True)  # existence is checked under the lock, below
        self.lock = lock if lock is not None else WriterLock(self.path).acquire()
        try:
            if self.path.exists() and not overwrite:
                raise StoreError(f"{self.path} already exists; pass --overwrite to replace it, "
                                 "or 'dynsim resume' to continue it")
            self._create(config, data, params_initial, observables, backend, device, history, two_time, inputs,
                         int(trajectory_replicas), dict(provenance or {}))
        except BaseException:
            _abandon_creation(self)
            raise

    def _create(self, config, data, params_initial, observables, backend, device, history, two_time, inputs,
                trajectory_replicas, provenance):
        self.config = config.resolved()
        self.observables = tuple(observables)
        self.replicas, self.n_params = params_initial.shape
        self.trajectory_replicas = min(trajectory_replicas, self.replicas)
        self.provenance = provenance
        self.param_dtype = params_initial.dtype  # run.precision: parameters are stored as they are computed
        empty = np.zeros(0, dtype=np.int64)
        self.waits, self.lags = two_time if two_time is not None else (empty, empty)
        # the config names its observables' registry and dimension sizes (simple network or deep MLP)
        self._specs = self.config.observable_specs()
        self._sizes = self.config.dim_sizes(data.x_probe.shape[0], data.x_source.shape[0], len(self.waits))
        self.block_records = self.config.record.block_records
        self._pending: list[tuple[int, float, dict]] = []
        self.n_records = 0
        self._slot = -1
        compression = self.config.record.compression
        self._filter = {} if compression == "none" else dict(compression=compression, shuffle=True)
        self._check_free_space(data)
        # The header is built under a temporary name and renamed into place once the file is in
        # SWMR mode, so that PATH is at every instant either absent or a valid run file.
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.file = h5py.File(partial, "w", libver=_LIBVER)
        except OSError as exc:
            raise StoreError(f"cannot create {partial}: {exc}") from None
        self._write_header(data, params_initial, backend, device, history, self.lock.identity)
        if inputs:
            named = self.file.create_group("inputs")
            for name, (values, description, dims) in inputs.items():
                ds = named.create_dataset(name, data=values)
                ds.attrs.update(dict(description=description, dims=",".join(dims)))
        self.file.swmr_mode = True
        self.file.flush()
        os.replace(partial, self.path)

    def _check_free_space(self, data):
        """Refuse to start when even the compressed estimate of the file cannot fit on the disk."""
        sizes = self._sizes
        n_rec = self.config.record.n_records + 2 + len(self.waits) * (1 + len(self.lags))
        per_record = sum(int(np.prod([sizes[d] for d in self._specs[n].dims], dtype=np.int64))
                         for n in self.observables) * self.replicas * 8
        per_record += self.trajectory_replicas * self.n_params * self.param_dtype.itemsize
        estimate = n_rec * per_record + 5 * self.replicas * self.n_params * 8
        if self.config.record.compression != "none":
            estimate //= 4  # float64 noise compresses poorly; 4x is a conservative best case
        free = shutil.disk_usage(self.path.parent).free
        if estimate > free:
            raise StoreError(f"the output needs about {format_bytes(estimate)} but {self.path.parent} has "
                             f"{format_bytes(free)} free; record fewer observables or replicas, "
                             "or write elsewhere with -o")

    # -- creation ---------------------------------------------------------------------------
    def _param_chunks(self):
        """Chunks of [slot, replica, n_params] parameter datasets: one slot, about 4 MiB of replicas.

        A chunk of a whole slot made HDF5 hold a second, chunk-sized copy of the ensemble while
        writing it (measured: peak memory twice the parameters for 10^6 replicas).
        """
        r, p = self.replicas, self.n_params
        if r * p == 0:
            return None
        rows = max(1, min(r, (4 << 20) // (p * self.param_dtype.itemsize)))
        return (1, rows, p)

    def _write_header(self, data, params_initial, backend, device, history, writer):
        f, cfg = self.file, self.config
        st = _write_shared_header(f, cfg, layout=None, n_replicas=self.replicas, backend=backend, device=device,
                                  writer=writer, history=history, n_params=self.n_params, **self.provenance)
        f.create_group("model").attrs.update(cfg.model_attributes())
        training = f.create_group("training")
        training.attrs.update(cfg.training_attributes())
        training.attrs.update(dict(seed=cfg.run.seed, steps=cfg.run.steps, replicas=cfg.run.replicas))
        g = f.create_group("data")
        g.attrs["task"] = cfg.task.kind
        for name in DATA_NAMES:
            g.create_dataset(name, data=getattr(data, name))
        f.create_group("probes").create_dataset("x", data=data.x_probe)
        src = f.create_group("sources")
        for name, values in (("x", data.x_source), ("y", data.y_source), ("index", data.source_index)):
            src.create_dataset(name, data=values)
        time = f.create_group("time")
        time.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        time.create_dataset("t", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        time["t"].attrs["units"] = "step * time_step (training.time_step: eta, or dt for the sde trainer)"
        self._create_observables(data)
        if len(self.waits):
            self._create_two_time()
        if self.trajectory_replicas:
            self._create_trajectory()
        params = f.create_group("params")
        params.create_dataset("initial", data=params_initial, **self._filter)
        params["initial"].attrs["layout"] = cfg.param_layout
        params.create_dataset("final", shape=params_initial.shape, dtype=params_initial.dtype, fillvalue=np.nan)
        r, p = self.replicas, self.n_params
        ck = f.create_group("checkpoint")
        ck.create_dataset("params", shape=(2, r, p), dtype=params_initial.dtype, chunks=self._param_chunks())
        ck.create_dataset("step", data=np.zeros(2, dtype=np.int64))
        ck.create_dataset("n_records", data=np.zeros(2, dtype=np.int64))
        ck.create_dataset("replica_failed_step", data=np.full((2, r), -1, dtype=np.int64))
        ck.create_dataset("active", data=np.int64(-1))
        ck.attrs["rng"] = ("counter-based Philox4x32-10 keyed by (seed, replica, stream, step): "
                           "no state beyond the step")
        for name in RUN_STATUS_SCALARS:
            st.create_dataset(name, data=np.int64(0 if name in ("last_step", "n_records") else -1))
        st.create_dataset("replica_failed_step", data=np.full(r, -1, dtype=np.int64))
        self.set_status(STATUS_RUNNING, "run started", last_step=0)
        self.checkpoint(0, params_initial, np.full(r, -1, dtype=np.int64))

    def _create_observables(self, data):
        g = self.file.create_group("observables")
        sizes = self._sizes
        scales = {"record": g.create_dataset("record", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,)),
                  "replica": g.create_dataset("replica", data=np.arange(self.replicas, dtype=np.int64))}
        for dim, size in sizes.items():
            values = np.asarray(self.waits, dtype=np.int64) if dim == "wait" else np.arange(size, dtype=np.int64)
            scales[dim] = g.create_dataset(dim, data=values)
        for name, ds in scales.items():
            ds.make_scale(name)
        scales["record"].attrs["description"] = "training step of each record (same as /time/step)"
        for name in self.observables:
            spec = self._specs[name]
            inner = tuple(sizes[d] for d in spec.dims)
            ds = g.create_dataset(name, shape=(0, self.replicas) + inner, maxshape=(None, self.replicas) + inner,
                                  dtype=np.float64, chunks=_chunks(self.replicas, inner, self.block_records),
                                  fillvalue=np.nan, **self._filter)
            dims = ("record", "replica") + spec.dims
            ds.attrs.update(dict(units=spec.units, description=spec.description, dims=",".join(dims)))
            for axis, dim in enumerate(dims):
                ds.dims[axis].attach_scale(scales[dim])

    def _create_two_time(self):
        g = self.file.create_group("two_time")
        step = self.config.training.time_step
        g.attrs["description"] = ("two-time quantities on the (t_w, tau) grid; /observables/{autocorrelation,msd} "
                                  "hold the same values per record (axis 'wait'), these arrays are filled when "
                                  "the run ends (RunReader.two_time builds them from the records before that)")
        for name, values in (("t_w", self.waits), ("tau", self.lags)):
            ds = g.create_dataset(name, data=np.asarray(values, dtype=np.int64))
            ds.make_scale(name)
            ds.attrs["units"] = "steps"
            g.create_dataset(f"{name}_time", data=np.asarray(values, dtype=np.float64) * step).attrs["units"] = "t"
        r, p, nw, nl = self.replicas, self.n_params, len(self.waits), len(self.lags)
        snap = g.create_dataset("theta_w", shape=(nw, r, p), dtype=self.param_dtype, fillvalue=np.nan,
                                chunks=self._param_chunks())
        snap.attrs["description"] = "parameters at each waiting time (written when t_w is reached)"
        # the kernel and the response at each waiting time (copies of their records at t = t_w)
        for name in ("ntk", "response", "response_linear"):
            if name in self.observables:
                spec = OBSERVABLES[name]
                inner = tuple(self._sizes[d] for d in spec.dims)
                ds = g.create_dataset(name, shape=(nw, r) + inner, dtype=np.float64, fillvalue=np.nan)
                ds.attrs.update(dict(units=spec.units, description=spec.description + " at t = t_w",
                                     dims=",".join(("t_w", "replica") + spec.dims)))
                ds.dims[0].attach_scale(g["t_w"])
        for name in TWO_TIME_GRIDS:
            spec = OBSERVABLES[name]
            ds = g.create_dataset(name, shape=(nw, nl, r), dtype=np.float64, fillvalue=np.nan)
            ds.attrs.update(dict(units=spec.units, description=spec.description, dims="t_w,tau,replica"))
            ds.dims[0].attach_scale(g["t_w"])
            ds.dims[1].attach_scale(g["tau"])

    @_io_guarded
    def _create_trajectory(self):
        """/trajectory/params [record, replica, param]: theta of the first replicas at every record.

        Chunked by record (about a MiB per chunk, so that a record range reads few chunks) and
        compressed losslessly by the run's filter (record.compression; gzip by default: in every HDF5
        build, so that any tool reads the file) after HDF5's byte shuffle, which groups the bytes of
        equal significance of neighbouring floats: their exponents repeat, which is what compresses.
        """
        r, p = self.trajectory_replicas, self.n_params
        per_record = max(1, r * p * self.param_dtype.itemsize)
        chunk_records = max(1, min(1024, _CHUNK_BYTES // per_record))
        ds = self.file.create_group("trajectory").create_dataset(
            "params", shape=(0, r, p), maxshape=(None, r, p), dtype=self.param_dtype,
            chunks=(chunk_records, r, p), **self._filter)
        ds.attrs.update(dict(dims="record,replica,param", layout=self.config.param_layout, units="parameter units",
                             description=f"theta of replicas 0..{r - 1} at every record (the record's step is "
                                         "/time/step); committed rows: /status/n_records"))

    def write_snapshot(self, wait_index: int, params: np.ndarray):
        """Store theta(t_w) of every replica (needed to resume the two-time observables)."""
        self.file["two_time/theta_w"][wait_index] = params
        self.file.flush()

    def _write_two_time(self):
        """Fill /two_time/{autocorrelation,msd} [t_w, tau, replica] from the committed records."""
        steps = self.file["time/step"][: self.n_records]
        for name in TWO_TIME_GRIDS:
            self.file["two_time"][name][...] = _two_time_grid(steps, self.file["observables"][name], self.waits,
                                                              self.lags, self.replicas)
        for name in ("ntk", "response", "response_linear"):
            if name in self.file["two_time"]:
                for i, wait in enumerate(self.waits):
                    k = np.searchsorted(steps, wait)
                    if k < len(steps) and steps[k] == wait:
                        self.file["two_time"][name][i] = self.file["observables"][name][k]

    # -- appending ----------------------------------------------------------------------------
    def append(self, step: int, t: float, buffers: dict, params: np.ndarray | None = None):
        """Queue one record (copies the buffers, and the parameters when the trajectory is recorded);
        ``write_block`` writes the queue."""
        arrays = {n: np.array(buffers[n]) for n in self.observables}
        if self.trajectory_replicas:
            arrays[_TRAJECTORY] = np.array(params[: self.trajectory_replicas])
        self._pending.append((int(step), float(t), arrays))

    @property
    def records_total(self) -> int:
        """Records written plus records queued."""
        return self.n_records + len(self._pending)

    @property
    def block_full(self) -> bool:
        return len(self._pending) >= self.block_records

    @_io_guarded
    def write_records(self, steps, times, arrays: dict):
        """Append k complete records ([k] steps and times, {name: [k, replica, ...]}), then commit them."""
        k = len(steps)
        if k == 0:
            return
        _ensure_room(self, sum(np.asarray(values).nbytes for values in arrays.values()) + 24 * k + _WRITE_SLACK)
        n0, n1 = self.n_records, self.n_records + k
        for ds, values in ((self.file["time/step"], steps), (self.file["observables/record"], steps),
                           (self.file["time/t"], times)):
            ds.resize((n1,))
            ds[n0:n1] = values
        for name in self.observables:
            ds = self.file["observables"][name]
            ds.resize((n1,) + ds.shape[1:])
            ds[n0:n1] = arrays[name]
        if self.trajectory_replicas:
            ds = self.file[_TRAJECTORY]
            ds.resize((n1,) + ds.shape[1:])
            ds[n0:n1] = arrays[_TRAJECTORY]
        self.file.flush()
        self._commit_records(n1)

    def _commit_records(self, n_records: int):
        """The commit point of appended records: one small write, after the records are on disk."""
        self.file["status/n_records"][()] = n_records
        self.file.flush()
        self.n_records = n_records

    def write_block(self):
        if not self._pending:
            return
        steps = np.array([p[0] for p in self._pending], dtype=np.int64)
        times = np.array([p[1] for p in self._pending])
        arrays = {name: np.stack([p[2][name] for p in self._pending]) for name in self._pending[0][2]}
        self._pending.clear()
        self.write_records(steps, times, arrays)

    @_io_guarded
    def checkpoint(self, step: int, params: np.ndarray, replica_failed_step: np.ndarray):
        """Write queued records, then a complete checkpoint into the free slot, then flip to it."""
        self.write_block()
        # the slots exist at their full size, but their chunks are allocated when first written
        _ensure_room(self, params.nbytes + _WRITE_SLACK if self._slot < 1 else _WRITE_SLACK)
        slot = 1 - self._slot if self._slot >= 0 else 0
        ck = self.file["checkpoint"]
        ck["params"][slot] = params
        ck["step"][slot] = int(step)
        ck["n_records"][slot] = self.n_records
        ck["replica_failed_step"][slot] = replica_failed_step
        self.file.flush()
        self._commit_checkpoint(slot)
        self.set_status(STATUS_RUNNING, f"running; checkpoint at step {step}", last_step=step)
        self.file.flush()
        self.last_checkpoint = (int(step), self.n_records)

    def _commit_checkpoint(self, slot: int):
        """The commit point of a checkpoint: flip the active slot once the slot is complete on disk."""
        self.file["checkpoint/active"][()] = slot
        self._slot = slot

    def set_status(self, code: str, message: str, *, last_step: int, replica: int = -1, failed_step: int = -1):
        st = self.file["status"]
        _write_status_text(self.file, code, message)
        st["last_step"][()] = int(last_step)
        st["replica"][()] = int(replica)
        st["failed_step"][()] = int(failed_step)

    @_io_guarded
    def finish(self, step: int, params: np.ndarray, code: str, message: str, *, replica=-1, failed_step=-1,
               replica_failed_step=None):
        """Final write: queued records, a last checkpoint, ``/params/final`` and the status.

        A diverged run keeps its last consistent checkpoint instead: its final parameters mix
        replicas stopped at different steps.
        """
        failed = np.full(self.replicas, -1, dtype=np.int64) if replica_failed_step is None else replica_failed_step
        if code == STATUS_DIVERGED:
            self.write_block()
        else:
            self.checkpoint(step, params, failed)
        self.file["status/replica_failed_step"][...] = failed
        if len(self.waits):
            self._write_two_time()
        self.file["params/final"][...] = params
        # the status is the commit point of the whole file: everything above must be on disk before
        # it says "completed" (one flush for both let HDF5 write the small status first, and a kill in
        # that flush left a "completed" file whose /params/final was still the NaN fill value)
        self.file.flush()
        self.set_status(code, message, last_step=step, replica=replica, failed_step=failed_step)
        self.file.flush()

    def close(self):
        try:
            if getattr(self, "file", None) is not None and self.file.id.valid:
                try:
                    self.file.close()
                except (OSError, RuntimeError):
                    if not getattr(self, "_failed", False):
                        raise  # after a failed write the close's own flush may fail too: already reported
        finally:
            if getattr(self, "lock", None) is not None:
                self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _two_time_grid(steps, per_record, waits, lags, replicas) -> np.ndarray:
    """[t_w, tau, replica] from a per-record two-time observable [record, replica, wait]; NaN where
    the record t_w + tau is not among ``steps`` (not reached, or not committed)."""
    out = np.full((len(waits), len(lags), replicas), np.nan)
    for i, wait in enumerate(waits):
        for j, lag in enumerate(lags):
            k = np.searchsorted(steps, wait + lag)
            if k < len(steps) and steps[k] == wait + lag:
                out[i, j] = per_record[k, :, i]
    return out


def open_for_reading(path: Path) -> h5py.File:
    """Open read-only; a file whose SWMR writer is still running (or died) opens in SWMR-read mode.

    Only that case is retried in SWMR mode: SWMR readers retry failed metadata reads for a long
    time (they expect a live writer to finish), which would hang on a genuinely truncated file.
    """
    try:
        return h5py.File(path, "r")
    except OSError as first:
        if "already open for write" not in str(first):
            raise
        return h5py.File(path, "r", swmr=True)


_MODEL_FIRST = ("input_dim", "width", "activation")
_MODEL_SKIP = ("kind", "formula", "param_layout", "n_params")
_TRAINING_FIRST = ("eta", "batch_size", "loss", "seed", "steps")


def _attribute_line(attrs, *, first=(), skip=()) -> str:
    """``key=value`` for every scalar attribute (of /model, /training): what the file's kind wrote,
    nothing assumed; ``first`` in that order, then the rest in the file's order."""
    keys = [k for k in first if k in attrs] + [k for k in attrs if k not in first and k not in skip]
    cells = []
    for key in keys:
        value = attrs[key]
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and len(value) > 40:  # descriptions and formulas: 'dynsim info --config' has all
            continue
        if isinstance(value, np.ndarray):
            if value.size > 8:
                continue
            value = ",".join(str(v) for v in value.tolist())
        elif isinstance(value, np.generic):
            value = value.item()
        cells.append(f"{key}={value}")
    return " ".join(cells)


class RunReader:
    """Read access to a run file; raises StoreError with a clear message for foreign or broken files.

    Only committed records are shown: in a file still being written, or whose writer was killed,
    records appended after the last commit are ignored.
    """

    def __init__(self, path, group: str | None = None):
        """``group``: a run stored as a group of a larger file (a point of a merged sweep file)."""
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a dynsim HDF5 file")
        try:
            self._h5 = open_for_reading(self.path)
        except OSError as exc:
            kind = "empty" if self.path.stat().st_size == 0 else "not an HDF5 file, or truncated"
            raise StoreError(f"{self.path}: cannot open as HDF5 ({kind}): {exc}") from None
        try:
            if group is not None and group not in self._h5:
                raise StoreError(f"{self.path} has no group '/{group}'")
            self.file = self._h5 if group is None else self._h5[group]
            self._validate()
        except StoreError:
            self._h5.close()
            raise
        except (OSError, KeyError, ValueError) as exc:  # damaged internals: name the file, not h5py
            self._h5.close()
            raise StoreError(f"{self.path} is damaged or incomplete: {exc}") from None

    def _validate(self):
        if self.file.attrs.get("format") != FORMAT:
            raise StoreError(f"{self.path} is an HDF5 file but not a dynsim run (no format='dynsim' attribute)")
        if self.file.attrs.get("experiment", LAYOUT_RUN) != LAYOUT_RUN:
            raise StoreError(f"{self.path} is a dynsim {self.file.attrs['experiment']} file, not a training run: "
                             "'dynsim info' and 'analysis report' read it")
        version = int(self.file.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise StoreError(f"{self.path} has dynsim format_version {version}; this dynsim reads "
                             f"version {FORMAT_VERSION}")
        for required in ("config", "model", "time/step", "observables", "status/n_records", "checkpoint/active",
                         "params/initial"):
            if required not in self.file:
                raise StoreError(f"{self.path} is incomplete: '/{required}' is missing")
        _verify_config(self.path, self.file)
        self.n_records = int(self.file["status/n_records"][()])

    def close(self):
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def attrs(self) -> dict:
        return dict(self.file.attrs)

    @property
    def config_text(self) -> str:
        raw = self.file["config"][()]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @property
    def config_digest(self) -> str:
        return str(self.file["config"].attrs["sha256"])

    @property
    def model_attrs(self) -> dict:
        return dict(self.file["model"].attrs)

    @property
    def training_attrs(self) -> dict:
        return dict(self.file["training"].attrs)

    @property
    def status(self) -> dict:
        st = self.file["status"]
        out = {name: int(st[name][()]) for name in RUN_STATUS_SCALARS}
        out.update(_read_status_text(self.file))
        return out

    @property
    def steps(self) -> np.ndarray:
        return self.file["time/step"][: self.n_records]

    @property
    def times(self) -> np.ndarray:
        return self.file["time/t"][: self.n_records]

    @property
    def observable_names(self) -> list[str]:
        g = self.file["observables"]
        return [n for n in g if "dims" in g[n].attrs]

    def observable(self, name: str, records=slice(None)) -> np.ndarray:
        """Committed records of one observable, [record, replica, ...]; ``records`` selects some."""
        if name not in self.observable_names:
            raise StoreError(f"{self.path} has no observable '{name}'; it has: {', '.join(self.observable_names)}")
        return self.file["observables"][name][: self.n_records][records]

    @property
    def has_two_time(self) -> bool:
        return "two_time" in self.file

    def two_time_axes(self) -> dict:
        """t_w and tau of the two-time grid, in steps and in time t."""
        if not self.has_two_time:
            raise StoreError(f"{self.path} has no two-time grid (run it with record.two_time_waits > 0)")
        g = self.file["two_time"]
        return {name: g[name][:] for name in TWO_TIME_AXES}

    def two_time(self, name: str) -> np.ndarray:
        """[t_w, tau, replica] of 'autocorrelation' or 'msd'; NaN where t_w + tau is not yet committed.

        Built from the committed records, so it works on a file still being written.
        """
        axes = self.two_time_axes()
        if name not in TWO_TIME_GRIDS:
            raise StoreError(f"no two-time quantity {name!r}; there are 'autocorrelation' and 'msd'")
        return _two_time_grid(self.steps, self.file["observables"][name], axes["t_w"], axes["tau"],
                              int(self.attrs["n_replicas"]))

    @property
    def trajectory_replicas(self) -> int:
        """How many replicas' parameters the file records at every record (0: none)."""
        return int(self.file[_TRAJECTORY].shape[1]) if _TRAJECTORY in self.file else 0

    def trajectory(self, records=slice(None)) -> np.ndarray:
        """Committed rows of ``/trajectory/params`` [record, replica, param]; ``records`` selects some."""
        if not self.trajectory_replicas:
            raise StoreError(f"{self.path} records no parameter trajectory; run it with [record] params = true "
                             "(or params = N for the first N replicas)")
        return self.file[_TRAJECTORY][: self.n_records][records]

    def observable_dims(self, name: str) -> tuple[str, ...]:
        return tuple(self.file["observables"][name].attrs["dims"].split(","))

    def dataset(self, path: str) -> np.ndarray:
        if path not in self.file:
            raise StoreError(f"{self.path} has no dataset '/{path}'")
        return self.file[path][()]

    def inputs(self) -> dict:
        """{name: array} of the kind's own named inputs (``/inputs``; empty for a kind without them)."""
        group = self.file.get("inputs")
        return {} if group is None else {name: group[name][()] for name in group}

    def data(self):
        """The run's data set (training, test, probes, sources) as a ``dynsim.tasks.Dataset``."""
        from .tasks import Dataset

        d = self.file["data"]
        return Dataset(*(d[name][()] for name in DATA_NAMES), self.file["probes/x"][()],
                       self.file["sources/index"][()])

    @property
    def checkpoint(self) -> dict:
        """The last complete checkpoint: step, records committed then, parameters, failed steps."""
        ck = self.file["checkpoint"]
        slot = int(ck["active"][()])
        if slot < 0:
            raise StoreError(f"{self.path} has no complete checkpoint yet")
        return dict(step=int(ck["step"][slot]), n_records=int(ck["n_records"][slot]), params=ck["params"][slot],
                    replica_failed_step=ck["replica_failed_step"][slot])

    def summary(self) -> str:
        a, m, t, st = self.attrs, self.model_attrs, self.training_attrs, self.status
        steps = self.steps
        lines = [
            f"file        {self.path}",
            f"format      {a['format']} v{a['format_version']}, dynsim {a.get('dynsim_version')}, "
            f"created {a.get('created')}, commit {a.get('git_commit')}",
            f"backend     {a.get('backend')} ({a.get('device')}); numba {a.get('numba_version')}, "
            f"numpy {a.get('numpy_version')}, h5py {a.get('h5py_version')}",
            f"model       {m.get('kind', a.get('kind'))}: {_attribute_line(m, first=_MODEL_FIRST, skip=_MODEL_SKIP)} "
            f"params={m.get('n_params', a.get('n_params'))} [{m.get('param_layout', '')}]",
            f"training    {t.get('method', '')} {_attribute_line(t, first=_TRAINING_FIRST, skip=('method', 'replicas'))} "
            f"replicas={a.get('n_replicas')}",
            f"records     {len(steps)}" + (f", steps {steps[0]}..{steps[-1]}" if len(steps) else ""),
            "observables",
        ]
        for name in self.observable_names:
            ds = self.file["observables"][name]
            shape = (self.n_records,) + ds.shape[1:]
            lines.append(f"  {name:<16} {str(shape):<24} [{ds.attrs['dims']}]  {ds.attrs['units']}")
        if self.trajectory_replicas:
            ds = self.file[_TRAJECTORY]
            lines.append(f"trajectory  params {(self.n_records,) + ds.shape[1:]} [record,replica,param] {ds.dtype}, "
                         f"{ds.compression or 'uncompressed'}: 'dynsim measure' recomputes observables from it")
        if "loss_train" in self.observable_names and len(steps):
            last = self.file["observables/loss_train"][self.n_records - 1]
            finite = last[np.isfinite(last)]
            if finite.size:
                lines.append(f"final loss  train mean {finite.mean():.6g} (median {np.median(finite):.6g}, "
                             f"{finite.size}/{last.size} replicas finite) at step {steps[-1]}")
        if "checkpoint/params" not in self.file or "checkpoint/step" not in self.file:
            raise StoreError(f"{self.path} is damaged: its checkpoint ('/checkpoint/params' or '/checkpoint/step') "
                             "is missing; its records can still be read (RunReader, analysis report), but it "
                             "cannot be resumed")
        try:
            ck = self.checkpoint
            lines.append(f"checkpoint  step {ck['step']}, {ck['n_records']} records")
        except StoreError:
            lines.append("checkpoint  none")
        where = f" (replica {st['replica']}, step {st['failed_step']})" if st["replica"] >= 0 else ""
        lines.append(f"status      {st['code']}: {st['message']}{where}")
        if st["code"] == STATUS_RUNNING:
            lines.append(f"writer      {writer_state(self.path, a)}")
        return "\n".join(lines)


# -- the max-norm chain experiment ------------------------------------------------------------
#
# Layout of a chain file (same root attributes, /config and /status code/message as a run)::
#
#     /                       attrs: format="dynsim", format_version, experiment="maxnorm_chain", versions, ...
#     /model                  attrs: kind="maxnorm_chain", width, candidates, depth, selection, layer_output
#     /inputs/train, message  [width]: the training input u (key a of the wormhole) and the message m
#     /inputs/probes          [probe, width]: the test inputs v (key b of the wormhole)
#     /inputs/probe_group     [probe] int8, attrs names: index -> group name ("data", "negated", "noise")
#     /chain/layer, replica, probe       dimension scales
#     /chain/train_log_gain   [layer, replica]: log |W_l e_{l-1}| of the training input (layer 0: log |u|)
#     /chain/NAME             [layer, replica, probe] for NAME in dynsim.models.chain.MEASURES;
#                             NaN where a replica is not written yet
#     /status/replicas_done   scalar: replicas 0..replicas_done-1 are complete (the commit point)
LAYOUT_CHAIN = "maxnorm_chain"
CHAIN_MEASURE_DOCS = {
    "angular_distance": ("1", "d = angle(H_l u, H_l v) / pi in [0, 1] (2 atan2(|a-b|, |a+b|) / pi of the unit vectors)"),
    "cosine": ("1", "cos(H_l u, H_l v)"),
    "sign_distance": ("1", "fraction of the k components whose signs (> 0 or not) differ between H_l u and H_l v"),
    "log_gain": ("log(input units)", "log |W_l e_{l-1}(v)| (layer 0: log |v|); linear chain: log |H_L v| is the "
                                     "cumulative sum"),
    "wormhole_error": ("1", "|m_hat - m| / |m|, m_hat = (m - alpha H_l v/|H_l v|) + alpha H_l u/|H_l u|"),
    "squared_distance": ("1", "|x - y|^2 / 4 of the compared vectors: (1 - cos) / 2 of the unit vectors; with "
                              "layer_output = 'relu_readout' x = relu(H_l u / |H_l u|), y = relu(H_l v / |H_l v|)"),
}


def _prepare_output(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise StoreError(f"{path} is a directory; give a file name for the output")
    if path.exists() and not overwrite:
        raise StoreError(f"{path} already exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the output directory {path.parent}: {exc.strerror}") from None
    if os.statvfs(path.parent).f_flag & os.ST_RDONLY:
        raise StoreError(f"cannot write to {path.parent}: it is on a read-only file system; choose another -o")
    if not os.access(path.parent, os.W_OK):
        raise StoreError(f"cannot write to directory {path.parent}: permission denied; choose another -o")


class ChainWriter:
    """Creates a max-norm chain file and writes it block of replicas by block (SWMR mode).

    Every dataset is created at its full size up front; a block of replicas is written, then
    committed by ``/status/replicas_done``, so a killed run keeps every committed replica.
    """

    @classmethod
    def reopen(cls, path, measures) -> "ChainWriter":
        """Open an existing chain file to write its remaining replicas (``dynsim resume``); ``measures``
        in the order of the blocks that will be written."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.lock = WriterLock(self.path).acquire()
        try:
            self.file = h5py.File(self.path, "r+", libver=_LIBVER)
        except OSError as exc:
            self.lock.release()
            raise StoreError(f"cannot open {self.path} for resuming: {exc}") from None
        try:
            if self.file.attrs.get("experiment") != LAYOUT_CHAIN:
                raise StoreError(f"{self.path} is not a max-norm chain file")
            self.replicas = int(self.file.attrs["n_replicas"])
            self.measures = tuple(measures)
            for name in self.measures:
                if name not in self.file["chain"]:
                    raise StoreError(f"it has no measure '{name}'")
            self.replicas_done = int(self.file["status/replicas_done"][()])
        except (StoreError, KeyError, OSError) as exc:
            self.file.close()
            self.lock.release()
            raise StoreError(f"{self.path} cannot be resumed: {exc}") from None
        self.file.attrs.update(dict(writer_host=self.lock.identity["host"], writer_pid=self.lock.identity["pid"],
                                    writer_started=self.lock.identity["started"]))
        self.file.swmr_mode = True
        return self

    def __init__(self, path, *, config, inputs, measures, overwrite=False):
        self.path = Path(path)
        self.file = None
        _prepare_output(self.path, overwrite=True)  # existence is checked under the lock, below
        self.lock = WriterLock(self.path).acquire()
        try:
            if self.path.exists() and not overwrite:
                raise StoreError(f"{self.path} already exists; pass --overwrite to replace it")
            self._create(config, inputs, measures)
        except BaseException:
            _abandon_creation(self)
            raise

    def _create(self, config, inputs, measures):
        self.config = config
        model, n_probes = config.model, inputs.probes.shape[0]
        self.replicas = config.run.replicas
        layers = model.depth + 1
        self.measures = tuple(measures)
        need = (len(self.measures) * n_probes + 1) * layers * self.replicas * 8
        free = shutil.disk_usage(self.path.parent).free
        if need // 2 > free:  # gzip at best halves float64 data of this kind
            raise StoreError(f"the output needs about {format_bytes(need // 2)} but {self.path.parent} has "
                             f"{format_bytes(free)} free; use fewer replicas or probes, or write elsewhere with -o")
        partial = self.path.with_name(self.path.name + ".partial")
        try:
            self.file = h5py.File(partial, "w", libver=_LIBVER)
        except OSError as exc:
            raise StoreError(f"cannot create {partial}: {exc}") from None
        f = self.file
        st = _write_shared_header(f, config, layout=LAYOUT_CHAIN, n_replicas=self.replicas, backend="cpu",
                                  device="cpu", writer=self.lock.identity)
        f.create_group("model").attrs.update(model.attributes())
        g = f.create_group("inputs")
        g.attrs["source"] = config.inputs.source
        g.create_dataset("train", data=inputs.train)
        g.create_dataset("message", data=inputs.message)
        g.create_dataset("probes", data=inputs.probes)
        g.create_dataset("probe_group", data=inputs.probe_group.astype(np.int8))
        g["probe_group"].attrs["names"] = ",".join(inputs.group_names)
        c = f.create_group("chain")
        c.attrs["alpha"] = config.wormhole.alpha
        scales = {"layer": c.create_dataset("layer", data=np.arange(layers, dtype=np.int64)),
                  "replica": c.create_dataset("replica", data=np.arange(self.replicas, dtype=np.int64)),
                  "probe": c.create_dataset("probe", data=np.arange(n_probes, dtype=np.int64))}
        for name, ds in scales.items():
            ds.make_scale(name)
        filt = dict(compression="gzip", shuffle=True)
        per_replica = max(1, layers * n_probes * 8)
        reps = max(1, min(self.replicas, _CHUNK_BYTES // per_replica))
        ds = c.create_dataset("train_log_gain", shape=(layers, self.replicas), dtype=np.float64, fillvalue=np.nan,
                              chunks=(layers, max(1, min(self.replicas, 4096))), **filt)
        ds.attrs.update(dict(units="log(input units)", dims="layer,replica",
                             description="log |W_l e_{l-1}| of the training input (layer 0: log |u|)"))
        for axis, dim in enumerate(("layer", "replica")):
            ds.dims[axis].attach_scale(scales[dim])
        for name in self.measures:
            ds = c.create_dataset(name, shape=(layers, self.replicas, n_probes), dtype=np.float64, fillvalue=np.nan,
                                  chunks=(layers, reps, max(1, n_probes)), **filt)
            units, doc = CHAIN_MEASURE_DOCS[name]
            ds.attrs.update(dict(units=units, description=doc, dims="layer,replica,probe"))
            for axis, dim in enumerate(("layer", "replica", "probe")):
                ds.dims[axis].attach_scale(scales[dim])
        st.create_dataset("replicas_done", data=np.int64(0))
        self.set_status(STATUS_RUNNING, "chain construction started")
        f.swmr_mode = True
        f.flush()
        os.replace(partial, self.path)
        self.replicas_done = 0

    @_io_guarded
    def write_block(self, first: int, train_log_gain: np.ndarray, measures: np.ndarray):
        """Write replicas first..first+B-1 ([layers, B] and [measure, layers, B, probes]), then commit them."""
        if first != self.replicas_done:
            raise StoreError(f"replicas are written in order: expected block at {self.replicas_done}, got {first}")
        last = first + train_log_gain.shape[1]
        c = self.file["chain"]
        c["train_log_gain"][:, first:last] = train_log_gain
        for i, name in enumerate(self.measures):
            c[name][:, first:last, :] = measures[i]
        self.file.flush()
        self.file["status/replicas_done"][()] = last
        self.file.flush()
        self.replicas_done = last

    def set_status(self, code: str, message: str):
        _write_status_text(self.file, code, message)

    def close(self):
        try:
            if getattr(self, "file", None) is not None and self.file.id.valid:
                self.file.flush()
                self.file.close()
        finally:
            if getattr(self, "lock", None) is not None:
                self.lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def file_kind(path, group: str | None = None) -> str:
    """The kind of experiment (``[model] kind``) that wrote a run or chain file, or one point of a
    merged sweep file (``group``). Files written before the root attribute ``kind`` existed are told
    apart as they always were: a chain file by ``experiment``, a run by its ``/model`` kind."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such file")
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a dynsim HDF5 file")
    try:
        h5 = open_for_reading(path)
    except OSError as exc:
        kind = "empty" if path.stat().st_size == 0 else "not an HDF5 file, or truncated"
        raise StoreError(f"{path}: cannot open as HDF5 ({kind}): {exc}") from None
    with h5:
        if group is not None and group not in h5:
            raise StoreError(f"{path} has no group '/{group}'")
        node = h5 if group is None else h5[group]
        attrs = node.attrs
        if attrs.get("format") != FORMAT:
            raise StoreError(f"{path} is an HDF5 file but not a dynsim run (no format='dynsim' attribute)")
        if "kind" in attrs:
            return str(attrs["kind"])
        if attrs.get("experiment", LAYOUT_RUN) == LAYOUT_CHAIN:
            return LAYOUT_CHAIN
        model = node.get("model")
        return str(model.attrs.get("kind", "simple")) if model is not None else "simple"


def file_layout(path, group: str | None = None) -> str:
    """'run' for a time-series run file (``RunWriter``), 'maxnorm_chain' for a chain file."""
    with open_for_reading(Path(path)) as h5:
        node = h5 if group is None else h5[group]
        return str(node.attrs.get("experiment", LAYOUT_RUN))


class ChainReader:
    """Read access to a max-norm chain file: committed replicas only."""

    def __init__(self, path, group: str | None = None):
        """``group``: a chain file stored as a group of a larger file (a point of a merged sweep file)."""
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such file")
        try:
            self._h5 = open_for_reading(self.path)
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open as HDF5 (not an HDF5 file, or truncated): {exc}") from None
        try:
            if group is not None and group not in self._h5:
                raise StoreError(f"{self.path} has no group '/{group}'")
            self.file = self._h5 if group is None else self._h5[group]
            if self.file.attrs.get("format") != FORMAT or self.file.attrs.get("experiment") != LAYOUT_CHAIN:
                raise StoreError(f"{self.path} is not a dynsim max-norm chain file (no experiment='maxnorm_chain')")
            for required in ("config", "model", "inputs/probes", "chain/train_log_gain", "status/replicas_done"):
                if required not in self.file:
                    raise StoreError(f"{self.path} is incomplete: '/{required}' is missing")
            _verify_config(self.path, self.file)
            self.replicas_done = int(self.file["status/replicas_done"][()])
        except StoreError:
            self._h5.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self._h5.close()
            raise StoreError(f"{self.path} is damaged or incomplete: {exc}") from None

    def close(self):
        self._h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def attrs(self) -> dict:
        return dict(self.file.attrs)

    @property
    def config_text(self) -> str:
        raw = self.file["config"][()]
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @property
    def model_attrs(self) -> dict:
        return dict(self.file["model"].attrs)

    @property
    def alpha(self) -> float:
        return float(self.file["chain"].attrs["alpha"])

    @property
    def status(self) -> dict:
        return dict(_read_status_text(self.file), replicas_done=self.replicas_done)

    def inputs(self) -> dict:
        g = self.file["inputs"]
        names = str(g["probe_group"].attrs["names"]).split(",")
        return dict(train=g["train"][()], message=g["message"][()], probes=g["probes"][()],
                    probe_group=g["probe_group"][()].astype(np.int64), group_names=names, source=str(g.attrs["source"]))

    @property
    def measure_names(self) -> list[str]:
        c = self.file["chain"]
        return [n for n in c if c[n].attrs.get("dims") == "layer,replica,probe"]

    def train_log_gain(self) -> np.ndarray:
        """[layer, replica] of the committed replicas."""
        return self.file["chain/train_log_gain"][:, : self.replicas_done]

    def measure(self, name: str, layers=slice(None)) -> np.ndarray:
        """[layer, replica, probe] of one measure, committed replicas only."""
        if name not in self.measure_names:
            raise StoreError(f"{self.path} has no chain measure '{name}'; it has: {', '.join(self.measure_names)}")
        return self.file["chain"][name][layers, : self.replicas_done, :]

    def summary(self) -> str:
        a, m, st = self.attrs, self.model_attrs, self.status
        inputs = self.inputs()
        groups = np.bincount(inputs["probe_group"], minlength=len(inputs["group_names"]))
        lines = [
            f"file        {self.path}",
            f"format      {a['format']} v{a['format_version']} ({a['experiment']}), dynsim {a.get('dynsim_version')}, "
            f"created {a.get('created')}, commit {a.get('git_commit')}",
            f"model       maxnorm_chain: k={m['width']} n={m['candidates']} depth={m['depth']} "
            f"selection={m['selection']} layer_output={m['layer_output']}",
            f"inputs      source {inputs['source']}; probes "
            + ", ".join(f"{name} {count}" for name, count in zip(inputs["group_names"], groups) if count),
            f"replicas    {self.replicas_done}/{a.get('n_replicas')} written; wormhole alpha {self.alpha:g}",
            "measures    [layer, replica, probe]: " + ", ".join(self.measure_names),
            f"status      {st['code']}: {st['message']}",
        ]
        if st["code"] == STATUS_RUNNING:
            lines.append(f"writer      {writer_state(self.path, a)}")
        return "\n".join(lines)


# -- merged sweep files ------------------------------------------------------------------------
#
# Layout of a merged sweep file (``dynsim sweep``)::
#
#     /                       attrs: format="dynsim-sweep", format_version=1, sweep_file, axes (JSON list), created
#     /sweep/point            [point] names "NNNN"
#     /sweep/status, message  [point] each point's status code and message
#     /sweep/axes/NAME        [point] the axis values (float, NaN where a point has none; or strings)
#     /points/NNNN            a completed point's whole file (run or chain), root attributes included
SWEEP_FORMAT = "dynsim-sweep"


def write_sweep_file(target, *, sweep_file, axes, points) -> Path:
    """Write a merged sweep file at ``target`` (built under a temporary name, then renamed).

    ``points``: (name, axis values, status code, message, path of its file or None) per point; the
    files of the points with a path are copied whole into ``/points/NAME``.
    """
    target = Path(target)
    tmp = target.with_name(target.name + ".partial")
    with h5py.File(tmp, "w") as out:
        out.attrs.update(dict(format=SWEEP_FORMAT, format_version=1, sweep_file=str(sweep_file),
                              axes=json.dumps(list(axes)), created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")))
        g = out.create_group("sweep")
        g.create_dataset("point", data=np.array([p[0] for p in points], dtype="S"))
        g.create_dataset("status", data=np.array([p[2] for p in points], dtype="S"))
        g.create_dataset("message", data=np.array([p[3][:1000] for p in points], dtype=h5py.string_dtype()))
        axes_group = g.create_group("axes")
        for name in axes:
            values = [p[1].get(name) for p in points]
            if all(isinstance(v, str) for v in values):
                axes_group.create_dataset(name, data=np.array(values, dtype=h5py.string_dtype()))
            elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                axes_group.create_dataset(name, data=np.array(values, dtype=np.int64))  # seeds, batch sizes
            else:
                axes_group.create_dataset(name, data=np.array([np.nan if v is None else v for v in values],
                                                              dtype=float))
        stored = out.create_group("points")
        for name, _, _, _, source in points:
            if source is None:
                continue
            with h5py.File(source, "r") as src:
                for key in src:
                    src.copy(src[key], stored.require_group(name), name=key)
                stored[name].attrs.update(dict(src.attrs))
    os.replace(tmp, target)
    return target


def sweep_points(path) -> list[tuple[str, dict]]:
    """(group, axis values) of every point stored in a merged sweep file, for ``RunReader(path, group)``."""
    with h5py.File(path, "r") as f:
        if f.attrs.get("format") != SWEEP_FORMAT:
            raise StoreError(f"{path} is not a merged dynsim sweep file")
        axes = json.loads(f.attrs["axes"])
        names = [n.decode() for n in f["sweep/point"][:]]
        out = []
        for i, name in enumerate(names):
            if f"points/{name}" not in f:
                continue
            values = {}
            for axis in axes:
                v = f["sweep/axes"][axis][i]
                values[axis] = v.decode() if isinstance(v, bytes) else v
            out.append((f"points/{name}", values))
    return out


def sweep_failures(path) -> list[tuple[str, dict, str, str]]:
    """(point, axis values, status code, message) of every point of a merged sweep file that did not
    complete (diverged, failed, pending): they are listed in /sweep but their files are not merged."""
    with h5py.File(path, "r") as f:
        axes = json.loads(f.attrs["axes"])
        names = [n.decode() for n in f["sweep/point"][:]]
        codes = [c.decode() for c in f["sweep/status"][:]]
        messages = [m.decode() if isinstance(m, bytes) else str(m) for m in f["sweep/message"][:]]
        out = []
        for i, name in enumerate(names):
            if codes[i] == "completed":
                continue
            values = {}
            for axis in axes:
                v = f["sweep/axes"][axis][i]
                values[axis] = v.decode() if isinstance(v, bytes) else v
            out.append((name, values, codes[i], messages[i]))
    return out


def is_sweep_file(path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == SWEEP_FORMAT
    except OSError:
        return False  # missing or not HDF5: RunReader says so


def describe_sweep(path) -> str:
    """A merged sweep file: its axes and every point's values and status (``dynsim info``)."""
    with h5py.File(path, "r") as f:
        axes = json.loads(f.attrs["axes"])
        names = [n.decode() for n in f["sweep/point"][:]]
        codes = [c.decode() for c in f["sweep/status"][:]]
        values = {a: f["sweep/axes"][a][:] for a in axes}
        lines = [f"sweep file  {path}: {len(names)} points, {codes.count('completed')} completed; "
                 f"axes {', '.join(axes)}; from {f.attrs.get('sweep_file')}",
                 "point  " + "  ".join(f"{a:>20}" for a in axes) + "  status"]
        for i, name in enumerate(names):
            cells = []
            for a in axes:
                v = values[a][i]
                cells.append(f"{v.decode() if isinstance(v, bytes) else v:>20}")
            lines.append(f"{name}   " + "  ".join(cells) + f"  {codes[i]}")
        lines.append("read a point with RunReader(path, group='points/NNNN') or 'analysis report'")
    return "\n".join(lines)
