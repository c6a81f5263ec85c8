"""The HDF5 schema of a dynsim run: the only module that knows group and dataset names.

Layout (format_version 1)::

    /                       attrs: format="dynsim", format_version, dynsim_version, created, git_commit,
                            python/numpy/numba/h5py versions, backend, device, n_replicas, n_params
    /config                 dataset: resolved config as TOML text; attrs: sha256
    /model                  attrs: kind, activation, input_dim, width, output_scale, param_layout, ...
    /training               attrs: method, eta, batch_size, loss, seed, ...
    /data/x_train, y_train, x_test, y_test
    /probes/x               [probe, input_dim]
    /sources/x, y, index    [source, input_dim], [source], [source] (index into the training set)
    /time/step, /time/t     [record]; t = step * eta
    /observables/NAME       [record, replica, ...] attrs: units, description, dims; resizable along record;
                            dimension scales /observables/{record,replica,probe,probe2,source}
    /params/initial, final  [replica, n_params]
    /checkpoint             params [replica, n_params]; attrs: step, n_records, rng
    /status                 attrs: code, message, last_step, replica (-1 if none), failed_step

Records are buffered and appended in blocks; each block write is followed by a checkpoint, the
status and a flush, in that order, so a file cut short still holds every record up to its
checkpoint.
"""
import datetime
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .observables import OBSERVABLE_SPECS, OBSERVABLES, dim_sizes

FORMAT = "dynsim"
FORMAT_VERSION = 1

STATUS_RUNNING = "running"
STATUS_COMPLETED = "completed"
STATUS_DIVERGED = "diverged"
STATUS_INTERRUPTED = "interrupted"

_CHUNK_BYTES = 1 << 20


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


class RunWriter:
    """Creates a run file and appends records, checkpoints and status to it."""

    def __init__(self, path, *, config, data, params_initial, observables, backend="cpu", device="cpu",
                 overwrite=False):
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise StoreError(f"{self.path} already exists; pass --overwrite to replace it, "
                             "or 'dynsim resume' to continue it")
        parent = self.path.parent if str(self.path.parent) else Path(".")
        if not parent.exists():
            parent.mkdir(parents=True, exist_ok=True)
        if not os.access(parent, os.W_OK):
            raise StoreError(f"cannot write to directory {parent}: permission denied")
        self.config = config.resolved()
        self.observables = tuple(observables)
        self.replicas = params_initial.shape[0]
        self.block_records = self.config.record.block_records
        self._pending: list[tuple[int, float, dict]] = []
        self.n_records = 0
        compression = self.config.record.compression
        self._filter = {} if compression == "none" else dict(compression=compression, shuffle=True)
        try:
            self.file = h5py.File(self.path, "w")
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc}") from None
        self._write_header(data, params_initial, backend, device)

    # -- creation ---------------------------------------------------------------------------
    def _write_header(self, data, params_initial, backend, device):
        f, cfg = self.file, self.config
        f.attrs.update(dict(format=FORMAT, format_version=FORMAT_VERSION,
                            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                            git_commit=_git_commit(), backend=backend, device=device,
                            n_replicas=self.replicas, n_params=params_initial.shape[1], **_versions()))
        text = cfg.to_toml()
        f.create_dataset("config", data=text, dtype=h5py.string_dtype())
        f["config"].attrs["sha256"] = cfg.digest()
        f.create_group("model").attrs.update(cfg.model.attributes())
        training = f.create_group("training")
        training.attrs.update(cfg.training.attributes(cfg.task.n_train))
        training.attrs["seed"] = cfg.run.seed
        training.attrs["steps"] = cfg.run.steps
        training.attrs["replicas"] = cfg.run.replicas
        g = f.create_group("data")
        g.attrs["task"] = cfg.task.kind
        for name in ("x_train", "y_train", "x_test", "y_test"):
            g.create_dataset(name, data=getattr(data, name))
        f.create_group("probes").create_dataset("x", data=data.x_probe)
        src = f.create_group("sources")
        src.create_dataset("x", data=data.x_source)
        src.create_dataset("y", data=data.y_source)
        src.create_dataset("index", data=data.source_index)
        time = f.create_group("time")
        time.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        time.create_dataset("t", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        time["t"].attrs["units"] = "step * eta"
        self._create_observables(data)
        params = f.create_group("params")
        params.create_dataset("initial", data=params_initial, **self._filter)
        params["initial"].attrs["layout"] = cfg.model.param_layout
        ck = f.create_group("checkpoint")
        ck.create_dataset("params", data=params_initial)
        ck.attrs.update(dict(step=0, n_records=0,
                             rng="counter-based Philox4x32-10 keyed by (seed, replica, stream, step): "
                                 "no state beyond the step"))
        f.create_group("status")
        self.set_status(STATUS_RUNNING, "run started", last_step=0)
        f.flush()

    def _create_observables(self, data):
        g = self.file.create_group("observables")
        sizes = dim_sizes(data.x_probe.shape[0], data.x_source.shape[0])
        scales = {"record": g.create_dataset("record", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,)),
                  "replica": g.create_dataset("replica", data=np.arange(self.replicas, dtype=np.int64))}
        for dim, size in sizes.items():
            scales[dim] = g.create_dataset(dim, data=np.arange(size, dtype=np.int64))
        for name, ds in scales.items():
            ds.make_scale(name)
        scales["record"].attrs["description"] = "training step of each record (same as /time/step)"
        for name in self.observables:
            spec = OBSERVABLES[name]
            inner = tuple(sizes[d] for d in spec.dims)
            ds = g.create_dataset(name, shape=(0, self.replicas) + inner, maxshape=(None, self.replicas) + inner,
                                  dtype=np.float64, chunks=_chunks(self.replicas, inner, self.block_records),
                                  fillvalue=np.nan, **self._filter)
            dims = ("record", "replica") + spec.dims
            ds.attrs.update(dict(units=spec.units, description=spec.description, dims=",".join(dims)))
            for axis, dim in enumerate(dims):
                ds.dims[axis].attach_scale(scales[dim])

    # -- appending ----------------------------------------------------------------------------
    def append(self, step: int, t: float, buffers: dict):
        """Queue one record (copies the buffers); writes a block when enough are queued."""
        self._pending.append((int(step), float(t), {n: np.array(buffers[n]) for n in self.observables}))

    @property
    def records_total(self) -> int:
        """Records written plus records queued."""
        return self.n_records + len(self._pending)

    @property
    def block_full(self) -> bool:
        return len(self._pending) >= self.block_records

    def write_block(self):
        if not self._pending:
            return
        k = len(self._pending)
        n0, n1 = self.n_records, self.n_records + k
        steps = np.array([p[0] for p in self._pending], dtype=np.int64)
        for ds, values in ((self.file["time/step"], steps), (self.file["observables/record"], steps),
                           (self.file["time/t"], np.array([p[1] for p in self._pending]))):
            ds.resize((n1,))
            ds[n0:n1] = values
        for name in self.observables:
            ds = self.file["observables"][name]
            ds.resize((n1,) + ds.shape[1:])
            ds[n0:n1] = np.stack([p[2][name] for p in self._pending])
        self.n_records = n1
        self._pending.clear()

    def checkpoint(self, step: int, params: np.ndarray):
        """Write queued records, then parameters at ``step``, then the status; flush."""
        self.write_block()
        ck = self.file["checkpoint"]
        ck["params"][...] = params
        ck.attrs["step"] = int(step)
        ck.attrs["n_records"] = self.n_records
        self.set_status(STATUS_RUNNING, f"running; checkpoint at step {step}", last_step=step)
        self.file.flush()

    def set_status(self, code: str, message: str, *, last_step: int, replica: int = -1, failed_step: int = -1):
        st = self.file["status"]
        st.attrs.update(dict(code=code, message=message, last_step=int(last_step), replica=int(replica),
                             failed_step=int(failed_step)))

    def finish(self, step: int, params: np.ndarray, code: str, message: str, *, replica=-1, failed_step=-1,
               failed_steps=None):
        """Final write: queued records, ``/params/final`` and the status.

        A diverged run (``failed_steps`` given: per replica, the step at which it failed or -1)
        keeps its last consistent checkpoint: its final parameters mix replicas at different steps.
        """
        if failed_steps is None:
            self.checkpoint(step, params)
        else:
            self.write_block()
            ds = self.file["status"].create_dataset("failed_step", data=np.asarray(failed_steps, dtype=np.int64))
            ds.attrs["description"] = "step at which each replica's loss became non-finite (-1: never)"
        self.file["params"].create_dataset("final", data=params, **self._filter)
        self.file["params/final"].attrs["step"] = int(step)
        self.set_status(code, message, last_step=step, replica=replica, failed_step=failed_step)
        self.file.flush()

    def close(self):
        if getattr(self, "file", None) is not None and self.file.id.valid:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RunReader:
    """Read access to a run file; raises StoreError with a clear message for foreign or broken files."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.exists():
            raise StoreError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a dynsim HDF5 file")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as exc:
            kind = "empty" if self.path.stat().st_size == 0 else "not an HDF5 file, or truncated"
            raise StoreError(f"{self.path}: cannot open as HDF5 ({kind}): {exc}") from None
        if self.file.attrs.get("format") != FORMAT:
            self.file.close()
            raise StoreError(f"{self.path} is an HDF5 file but not a dynsim run (no format='dynsim' attribute)")
        version = int(self.file.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            self.file.close()
            raise StoreError(f"{self.path} has dynsim format_version {version}; this dynsim reads "
                             f"version {FORMAT_VERSION}")
        for required in ("config", "model", "time", "observables", "status", "checkpoint"):
            if required not in self.file:
                self.file.close()
                raise StoreError(f"{self.path} is incomplete: group or dataset '/{required}' is missing")

    def close(self):
        self.file.close()

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

    def config(self):
        from .config import parse_config

        return parse_config(self.config_text, f"{self.path}:/config")

    @property
    def model_attrs(self) -> dict:
        return dict(self.file["model"].attrs)

    @property
    def training_attrs(self) -> dict:
        return dict(self.file["training"].attrs)

    @property
    def status(self) -> dict:
        return dict(self.file["status"].attrs)

    @property
    def steps(self) -> np.ndarray:
        return self.file["time/step"][()]

    @property
    def times(self) -> np.ndarray:
        return self.file["time/t"][()]

    @property
    def observable_names(self) -> list[str]:
        g = self.file["observables"]
        return [n for n in g if "dims" in g[n].attrs]

    def observable(self, name: str) -> np.ndarray:
        if name not in self.observable_names:
            raise StoreError(f"{self.path} has no observable '{name}'; it has: {', '.join(self.observable_names)}")
        return self.file["observables"][name][()]

    def observable_dims(self, name: str) -> tuple[str, ...]:
        return tuple(self.file["observables"][name].attrs["dims"].split(","))

    def dataset(self, path: str) -> np.ndarray:
        if path not in self.file:
            raise StoreError(f"{self.path} has no dataset '/{path}'")
        return self.file[path][()]

    @property
    def checkpoint(self) -> dict:
        ck = self.file["checkpoint"]
        return dict(step=int(ck.attrs["step"]), n_records=int(ck.attrs["n_records"]), params=ck["params"][()])

    def summary(self) -> str:
        a, m, t, st = self.attrs, self.model_attrs, self.training_attrs, self.status
        steps = self.steps
        lines = [
            f"file        {self.path}",
            f"format      {a['format']} v{a['format_version']}, dynsim {a.get('dynsim_version')}, "
            f"created {a.get('created')}, commit {a.get('git_commit')}",
            f"backend     {a.get('backend')} ({a.get('device')}); numba {a.get('numba_version')}, "
            f"numpy {a.get('numpy_version')}, h5py {a.get('h5py_version')}",
            f"model       {m['kind']}: input_dim={m['input_dim']} width={m['width']} activation={m['activation']} "
            f"scaling={m.get('scaling')} params={m.get('n_params')} [{m['param_layout']}]",
            f"training    {t['method']} eta={t['eta']} batch={t['batch_size']} loss={t['loss']} "
            f"seed={t['seed']} steps={t.get('steps')} replicas={a.get('n_replicas')}",
            f"records     {len(steps)}" + (f", steps {steps[0]}..{steps[-1]}" if len(steps) else ""),
            "observables",
        ]
        for name in self.observable_names:
            ds = self.file["observables"][name]
            lines.append(f"  {name:<16} {str(ds.shape):<24} [{ds.attrs['dims']}]  {ds.attrs['units']}")
        if "loss_train" in self.observable_names and len(steps):
            last = self.file["observables/loss_train"][-1]
            finite = last[np.isfinite(last)]
            if finite.size:
                lines.append(f"final loss  train mean {finite.mean():.6g} (median {np.median(finite):.6g}, "
                             f"{finite.size}/{last.size} replicas finite) at step {steps[-1]}")
        lines.append(f"checkpoint  step {self.checkpoint['step']}, {self.checkpoint['n_records']} records")
        where = f" (replica {st['replica']}, step {st['failed_step']})" if st.get("replica", -1) >= 0 else ""
        lines.append(f"status      {st['code']}: {st['message']}{where}")
        return "\n".join(lines)


def observable_specs():
    """The registry of observables, for readers that want units and descriptions."""
    return OBSERVABLE_SPECS
