"""Parameter sweeps on dask.distributed: ``dynsim sweep SWEEP.toml``.

A sweep file names a base config and axes over config fields::

    base = "quickstart.toml"          # path relative to the sweep file (or inline [base.*] tables)
    mode = "grid"                     # "grid": every combination; "zip": the axes side by side
    output = "runs/lr_batch"          # directory for the points (default: next to the sweep file)
    merge = true                      # copy every finished point into OUTPUT.h5
    retries = 2                       # a failing point is retried this often, then recorded as failed
    scheduler = ""                    # address of a running Dask scheduler; "" = a LocalCluster here

    [axes]
    "training.eta" = [0.02, 0.05]
    "training.batch_size" = [1, 4]
    "run.seed" = [1, 2]

or an explicit list of points, ``[[points]]`` tables with dotted keys. Every point's config is
built and validated before any task starts, so a bad axis (unknown field, empty list, wrong type,
a value out of range) is one ``ConfigError`` naming the axis and the value.

Each point is one Dask task that runs ``dynsim`` in the worker process and writes its own file
``OUTPUT/points/NNNN.h5`` (h5py handles never cross processes). A point whose file is complete is
skipped; one whose file exists but is not complete (a killed worker, an interrupted sweep) is
resumed from its checkpoint, so a rerun of the same sweep finishes it bit-identically. The client
keeps ``OUTPUT/index.json`` (point, axis values, status, message) up to date, and at the end
copies the finished points into ``OUTPUT.h5``: ``/points/NNNN`` is each point's file, copied
whole; ``/sweep/axes/NAME`` and ``/sweep/status`` index them.
"""
import dataclasses
import itertools
import json
import os
import sys
import tomllib
import uuid
from pathlib import Path

from . import kinds
from .config import results_digest
from .spec import ConfigError
from .store import SWEEP_FORMAT, describe_sweep, is_sweep_file, sweep_failures, sweep_points, write_sweep_file

__all__ = ["Sweep", "SweepPoint", "load_sweep", "run_sweep", "run_point", "merge", "describe_sweep", "is_sweep_file",
           "sweep_failures", "sweep_points", "SWEEP_FORMAT"]

_KEYS = {"base", "mode", "axes", "points", "output", "merge", "retries", "scheduler", "workers"}


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    index: int
    values: dict          # axis name -> value
    config: object        # a config of the base config's kind (dynsim.kinds)

    @property
    def name(self) -> str:
        return f"{self.index:04d}"


@dataclasses.dataclass(frozen=True)
class Sweep:
    path: Path
    axes: tuple[str, ...]
    points: tuple[SweepPoint, ...]
    output: Path
    merge: bool
    retries: int
    scheduler: str
    workers: int | None

    def point_path(self, point: SweepPoint) -> Path:
        return self.output / "points" / f"{point.name}.h5"

    @property
    def index_path(self) -> Path:
        return self.output / "index.json"

    @property
    def merged_path(self) -> Path:
        return self.output.with_suffix(".h5")


def _fail(field: str, message: str):
    raise ConfigError(f"sweep.{field}" if field else "sweep", message)


def _set_dotted(mapping: dict, dotted: str, value, where: str):
    section, _, key = dotted.partition(".")
    if not key or "." in key:
        _fail(where, f"got {dotted!r}; an axis is 'section.key', e.g. 'training.eta'")
    mapping.setdefault(section, {})[key] = value


def load_sweep(path, *, output=None, scheduler=None) -> Sweep:
    """Parse and validate a sweep file: every point's config is built here, before anything runs."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("sweep", f"{path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("sweep", f"{path} is not valid TOML: {exc}") from None
    unknown = set(data) - _KEYS
    if unknown:
        _fail(sorted(unknown)[0], f"unknown key; allowed: {', '.join(sorted(_KEYS))}")
    base = data.get("base")
    if isinstance(base, str):
        base_mapping = kinds.load_config(path.parent / base).to_mapping()
    elif isinstance(base, dict):
        base_mapping = kinds.config_from_mapping(base).to_mapping()
    else:
        _fail("base", "missing or not a path/table: give base = 'config.toml' or [base.run], [base.model], ...")
    mode = data.get("mode", "grid")
    if mode not in ("grid", "zip"):
        _fail("mode", f"got {mode!r}; allowed: 'grid', 'zip'")
    axes = data.get("axes", {})
    explicit = data.get("points")
    if not isinstance(axes, dict):
        _fail("axes", "must be a table of 'section.key' = [values]")
    if bool(axes) == bool(explicit):
        _fail("axes", "give either [axes] or [[points]], not both or neither")
    combos = []
    if axes:
        for name, values in axes.items():
            if not isinstance(values, list) or not values:
                _fail(f"axes.{name}", f"got {values!r}; an axis is a non-empty list of values")
        names = tuple(axes)
        if mode == "zip":
            lengths = {len(v) for v in axes.values()}
            if len(lengths) != 1:
                _fail("axes", f"mode = 'zip' needs axes of equal length, got lengths {sorted(lengths)}")
            combos = [dict(zip(names, vals)) for vals in zip(*axes.values())]
        else:
            combos = [dict(zip(names, vals)) for vals in itertools.product(*axes.values())]
    else:
        if not isinstance(explicit, list) or not all(isinstance(p, dict) for p in explicit):
            _fail("points", "must be an array of tables ([[points]]) of 'section.key' = value")
        names = tuple(dict.fromkeys(k for p in explicit for k in _flatten(p)))
        combos = [_flatten(p) for p in explicit]
    points = []
    for i, values in enumerate(combos):
        mapping = {k: dict(v) for k, v in base_mapping.items()}
        for name, value in values.items():
            _set_dotted(mapping, name, value, f"axes.{name}")
        try:
            config = kinds.config_from_mapping(mapping)
        except ConfigError as exc:
            where = ", ".join(f"{k} = {v!r}" for k, v in values.items())
            raise ConfigError(exc.field, f"{exc.detail} (in sweep point {i}: {where})") from None
        points.append(SweepPoint(i, values, config))
    out = Path(output) if output else path.parent / data.get("output", path.stem)
    retries = data.get("retries", 2)
    if not isinstance(retries, int) or retries < 0:
        _fail("retries", f"got {retries!r}; a whole number >= 0")
    workers = data.get("workers")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        _fail("workers", f"got {workers!r}; a whole number >= 1 (default: one per core)")
    return Sweep(path, names, tuple(points), out, bool(data.get("merge", True)), retries,
                 scheduler if scheduler is not None else str(data.get("scheduler", "")), workers)


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


# -- the task (runs in a worker process) ----------------------------------------------------------
def run_point(config_toml: str, path: str, threads: int) -> dict:
    """Run, resume or skip one point; returns {'code', 'message'}. Executed by a Dask worker."""
    import numba

    from .store import StoreError

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    config = kinds.parse_config(config_toml, source=path)
    kind = kinds.kind_of(config)
    target = Path(path)
    if target.exists():
        try:
            code = kind.status(target)
        except StoreError:
            code = "unreadable"
        if code == "completed":
            return {"code": "completed", "message": "already complete (skipped)"}
        if code in ("running", "interrupted"):
            result = kind.resume(target, progress=False, expect_config=config)
            return {"code": result.code, "message": f"resumed: {result.message}"}
        if code == "diverged" and _made_from(kind, target, config):
            # a run is a deterministic function of its config: running it again diverges again, at the
            # same step (under on_divergence = "freeze" its other replicas have run to the end)
            return {"code": "diverged", "message": "already finished, diverged (skipped)"}
        target.unlink()  # unreadable, or a diverged run of another config: start over
    target.parent.mkdir(parents=True, exist_ok=True)
    result = kind.run(config, target, progress=False)
    return {"code": result.code, "message": result.message}


def _made_from(kind, path: Path, config) -> bool:
    """Whether the file ``path`` of ``kind`` was made from ``config`` (equal results digests); a stored
    config this version cannot read is not (the point starts over, as before)."""
    try:
        stored = kinds.parse_config(kind.config_text(path), source=str(path))
    except ConfigError:
        return False
    return results_digest(stored) == results_digest(config)


# -- the client ----------------------------------------------------------------------------------
def _client(sweep: Sweep):
    from dask.distributed import Client, LocalCluster

    if sweep.scheduler:
        return Client(sweep.scheduler), None
    workers = sweep.workers or os.cpu_count() or 1
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return Client(cluster), cluster


def _write_index(sweep: Sweep, status: dict):
    entries = [dict(point=p.name, file=str(sweep.point_path(p).relative_to(sweep.output)), values=p.values,
                    **status.get(p.index, {"code": "pending", "message": ""})) for p in sweep.points]
    tmp = sweep.index_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(format=SWEEP_FORMAT, sweep=str(sweep.path), axes=list(sweep.axes),
                                   points=entries), indent=1, default=str))
    os.replace(tmp, sweep.index_path)  # atomic: the index is always a complete JSON file


def run_sweep(sweep: Sweep, *, progress=None, client=None) -> dict:
    """Run every point of ``sweep`` on Dask; returns {point index: {'code', 'message'}}."""
    from dask.distributed import as_completed
    from tqdm import tqdm

    sweep.output.mkdir(parents=True, exist_ok=True)
    own = client is None
    cluster = None
    if own:
        client, cluster = _client(sweep)
    status: dict[int, dict] = {}
    try:
        info = client.scheduler_info()
        # Client.dashboard_link is built from a template whether or not the scheduler serves a
        # dashboard: name one only when the scheduler lists the service
        link = getattr(client, "dashboard_link", None) if "dashboard" in info.get("services", {}) else None
        where = f"; Dask dashboard: {link}" if link else " (the scheduler serves no dashboard)"
        print(f"dynsim sweep: {len(sweep.points)} points on {len(info['workers'])} workers{where}", file=sys.stderr)
        n_workers = max(1, len(info["workers"]))
        threads = max(1, (os.cpu_count() or 1) // n_workers) if cluster is not None else 1
        futures = {}
        for p in sweep.points:
            fut = client.submit(run_point, p.config.to_toml(), str(sweep.point_path(p)), threads,
                                # unique per submission: a Dask client hands back a finished task's
                                # result for a key it has seen, even if that point's file is gone
                                key=f"dynsim-point-{p.name}-{uuid.uuid4().hex[:12]}", retries=sweep.retries,
                                pure=False)
            futures[fut] = p
        _write_index(sweep, status)
        enabled = sys.stderr.isatty() if progress is None else bool(progress)
        bar = tqdm(total=len(futures), unit="point", disable=not enabled, desc="sweep")
        for fut in as_completed(futures):
            p = futures[fut]
            try:
                status[p.index] = fut.result()
            except Exception as exc:  # noqa: BLE001 - a point's failure is recorded, the others go on
                status[p.index] = {"code": "failed", "message": f"{type(exc).__name__}: {exc}"}
            bar.update(1)
            bar.set_postfix_str(f"{p.name} {status[p.index]['code']}")
            _write_index(sweep, status)
        bar.close()
    finally:
        if own:
            client.close()
            if cluster is not None:
                cluster.close()
    if sweep.merge:
        merge(sweep, status)
    return status


def failed_points(status: dict) -> dict:
    """The points of a ``run_sweep`` status that neither completed nor diverged: a diverged point
    (frozen or stopped) is a result, as a diverged ``dynsim run`` is; any other end is an error."""
    return {i: s for i, s in status.items() if s["code"] not in ("completed", "diverged")}


def merge(sweep: Sweep, status: dict) -> Path:
    """Copy every completed point's file into ``OUTPUT.h5`` (the store writes it; see ``write_sweep_file``)."""
    points = []
    for p in sweep.points:
        st = status.get(p.index, {})
        code = st.get("code", "pending")
        points.append((p.name, p.values, code, st.get("message", ""),
                       sweep.point_path(p) if code == "completed" else None))
    return write_sweep_file(sweep.merged_path, sweep_file=sweep.path, axes=sweep.axes, points=points)
