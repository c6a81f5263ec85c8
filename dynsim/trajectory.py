"""Observables measured afterwards, from a run's recorded trajectory: ``dynsim measure``.

A run with ``[record] params = true`` (or ``= N``) stores theta of its replicas (or its first N)
at every record time (``/trajectory/params``). ``measure_run`` rebuilds the run's own runner from
the stored config (its kind's, through ``dynsim.kinds``), optionally with new probes or sources,
and applies the same compiled measurement kernels to every stored record, writing an ordinary run
file (``RunReader``, ``dynsim.open_run`` and ``analysis report`` read it) whose root attributes
name the run it was measured from. On the run's own probes and sources the recomputed observables
equal the recorded ones bit for bit: same parameters, same kernels, same data.

Two-time quantities (autocorrelation, msd) need the waiting-time snapshots of a run, not single
records, and are not measured afterwards.
"""
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from . import kinds
from .engine import STATUS_NONFINITE, STATUS_OK, blank_diverged
from .spec import ConfigError
from .store import RunReader, RunWriter, StoreError


def _record_table(config, **changes):
    """``config`` with some ``[record]`` keys changed, those the kind's record table has."""
    names = {f.name for f in dataclasses.fields(config.record)}
    return dataclasses.replace(config, record=dataclasses.replace(
        config.record, **{k: v for k, v in changes.items() if k in names}))


def probe_grid(x_train: np.ndarray, n: int) -> np.ndarray:
    """n cell-centred points per input axis over the training inputs' range (input_dim 1 or 2)."""
    dim = x_train.shape[1]
    if dim not in (1, 2) or n < 1:
        raise ConfigError("--probe-grid", f"got {n} with input_dim = {dim}; a probe grid is n >= 1 points per axis "
                                          "for input_dim 1 or 2: give --probes FILE.npy otherwise")
    low, high = x_train.min(axis=0), x_train.max(axis=0)
    axes = [low[d] + (high[d] - low[d]) * (np.arange(n) + 0.5) / n for d in range(dim)]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.ascontiguousarray(np.stack([m.ravel() for m in mesh], axis=1))


def measure_run(run_path, out_path, *, observables=None, probes=None, probe_grid_points=None, sources=None,
                overwrite: bool = False) -> Path:
    """Measure ``observables`` (default: every one the run recorded, two-time ones aside) at every
    record of ``run_path``'s trajectory into ``out_path``; ``probes`` [n, input_dim] or
    ``probe_grid_points`` replace the run's probes, ``sources`` (training-set indices) its sources."""
    run_path, out_path = Path(run_path), Path(out_path)
    if out_path.resolve() == run_path.resolve():
        raise StoreError(f"-o {out_path} is the run itself; write the measurements to another file")
    kind = kinds.kind_of_file(run_path)
    with RunReader(run_path) as reader:
        config = kinds.stored_config(reader)
        trajectory = reader.trajectory()  # [record, replica, param], committed records only
        steps, times = reader.steps, reader.times
        failed_step = reader.dataset("status/replica_failed_step")[: trajectory.shape[1]]
        recorded = reader.observable_names
        digest = reader.config_digest
    if not hasattr(kind, "runner"):
        raise StoreError(f"{run_path} is a {kind.name} file; only time-stepped runs record a trajectory")
    specs = config.observable_specs()
    chosen = tuple(observables) if observables else tuple(n for n in recorded if not specs[n].two_time)
    for name in chosen:
        if name not in specs:
            raise ConfigError("--observables", f"got {name!r}; a {kind.name} run has: {', '.join(specs)}")
        if specs[name].two_time:
            raise ConfigError("--observables", f"got {name!r}, a two-time quantity: it needs the run's waiting-time "
                                               "snapshots and is not measured afterwards")
    replicas = trajectory.shape[1]
    measured = _record_table(dataclasses.replace(
        config, run=dataclasses.replace(config.run, replicas=replicas, backend="cpu")),
        observables=chosen, two_time_waits=0, params=None)
    runner = kind.runner(measured)
    runner.data = _new_inputs(runner.data, probes, probe_grid_points, sources)
    provenance = dict(measured_from=str(run_path.resolve()), measured_from_sha256=digest,
                      measured_records=len(steps))
    writer = RunWriter(out_path, config=runner.config, data=runner.data, params_initial=np.array(trajectory[0]),
                       observables=runner.config.observables, overwrite=overwrite, provenance=provenance,
                       history=f"measured by dynsim measure from {run_path} (records {steps[0]}..{steps[-1]})")
    try:
        buffers = runner.allocate_buffers()
        for k, step in enumerate(steps):
            params = np.ascontiguousarray(trajectory[k])
            runner.measure(params, buffers)
            # as during the run: NaN for a replica that had diverged by this record
            status = np.where((failed_step >= 0) & (failed_step < step), STATUS_NONFINITE, STATUS_OK)
            blank_diverged(buffers, status.astype(np.int8))
            writer.append(int(step), float(times[k]), buffers)
            if writer.block_full:
                writer.write_block()
        writer.finish(int(steps[-1]), np.array(trajectory[-1]), "completed",
                      f"measured {len(chosen)} observables at {len(steps)} records of {run_path.name}")
    finally:
        writer.close()
    return out_path


def _new_inputs(data, probes, grid_points, sources):
    if probes is not None and grid_points is not None:
        raise ConfigError("--probes", "give --probes or --probe-grid, not both")
    if (probes is not None or grid_points is not None) and data.x_probe.shape[0] == 0:
        raise ConfigError("--probes", "this run's kind measures no probe inputs (its data set has none); "
                                      "measure it without --probes / --probe-grid")
    if grid_points is not None:
        probes = probe_grid(data.x_train, int(grid_points))
    if probes is not None:
        probes = np.ascontiguousarray(np.atleast_2d(np.asarray(probes, dtype=np.float64)))
        if probes.ndim != 2 or probes.shape[1] != data.x_train.shape[1]:
            raise ConfigError("--probes", f"got probes of shape {probes.shape}; they need "
                                          f"{data.x_train.shape[1]} columns (the run's input_dim)")
        data = dataclasses.replace(data, x_probe=probes)
    if sources is not None:
        index = np.asarray(sources, dtype=np.int64).ravel()
        if index.size == 0 or index.min() < 0 or index.max() >= data.x_train.shape[0]:
            raise ConfigError("--sources", f"got {index.tolist()}; sources are indices into the training set, "
                                           f"0..{data.x_train.shape[0] - 1}")
        data = dataclasses.replace(data, source_index=index)
    return data


def measure(run_path, *, observables=None, probes=None, probe_grid_points=None, sources=None):
    """``measure_run`` for scripts and notebooks: the measurements as an ``xarray.Dataset`` in memory
    (through a temporary file, which is removed)."""
    from .reading import open_run

    with tempfile.TemporaryDirectory(prefix="dynsim-measure-") as folder:
        path = measure_run(run_path, Path(folder) / "measured.h5", observables=observables, probes=probes,
                           probe_grid_points=probe_grid_points, sources=sources)
        return open_run(path)
