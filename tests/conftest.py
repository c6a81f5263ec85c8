"""Shared seeds, tolerances and small-config builders for the test suite.

Tolerances are stated where they are used; the ones shared by many tests live here:

* FLOAT_RTOL: two float64 computations of the same quantity by different code (NumPy vs the
  compiled kernel, different summation order) agree to ~1e-15 per operation; with O(100)
  accumulated operations and cancellation in small differences, 1e-10 relative leaves a wide
  margin while any real bug (wrong term, wrong factor) is orders of magnitude larger.
"""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynsim.config import Config, RecordSpec, RunSpec
from dynsim.integrators import TrainerSpec
from dynsim.models.simple import SimpleNet
from dynsim.store import open_for_reading
from dynsim.tasks import TaskSpec

# Subprocesses (``python -m dynsim.cli``, ``python -c``, Dask workers) must import the same dynsim
# as this process: with a non-editable install (CI) the current directory would otherwise put the
# source tree first on their path, and Numba's on-disk cache, keyed by source file, would be
# invalidated and recompiled every time the two copies alternate (minutes per switch).
os.environ.setdefault("PYTHONSAFEPATH", "1")

SEED = 20261125
FLOAT_RTOL = 1e-10


def small_config(**sections) -> Config:
    """A tiny but complete config; override per section with dicts, e.g. model=dict(width=4)."""
    base = dict(run=dict(seed=SEED, replicas=3, steps=40),
                model=dict(input_dim=2, width=6, activation="tanh", bias_std=0.5, output_bias=True),
                task=dict(kind="teacher", n_train=10, n_test=12, n_probes=5, n_sources=3),
                training=dict(method="sgd", eta=0.05, batch_size=2),
                record=dict(n_records=8, block_records=3))
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return Config(run=RunSpec(**base["run"]), model=SimpleNet(**base["model"]), task=TaskSpec(**base["task"]),
                  training=TrainerSpec(**base["training"]), record=RecordSpec(**base["record"]))


def write_config(path, config: Config):
    path.write_text(config.to_toml())
    return path


def run_cli(*args, env=None, check=False, timeout=600):
    """Run ``python -m dynsim.cli ARGS`` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "dynsim.cli", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dynsim {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


def replace(config: Config, **sections) -> Config:
    """``config`` with some fields of some sections replaced: replace(cfg, run=dict(seed=2))."""
    return dataclasses.replace(config, **{name: dataclasses.replace(getattr(config, name), **values)
                                          for name, values in sections.items()})


def file_datasets(path, skip_prefix="checkpoint/", group=None):
    """Every dataset of a run file (or of a run stored as ``group`` of a merged sweep file) as
    {name: array} (the checkpoint slots, whose fill order depends on the run's history, skipped),
    and the root attributes that carry no timestamp or writer's identity."""
    out = {}
    # as dynsim opens files: one whose writer was killed after its last write but before closing
    # (the SIGKILL test can hit that window) still carries HDF5's "open for write" flag
    with open_for_reading(Path(path)) as f:
        root = f if group is None else f[group]

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith(skip_prefix):
                out[name] = obj[()]
        root.visititems(visit)
        # when and by which process a file was written is not part of what it holds
        attrs = {k: str(v) for k, v in root.attrs.items()
                 if k not in ("created", "history", "writer_host", "writer_pid", "writer_started")}
    return out, attrs


def assert_same_datasets(a, b):
    """Two ``file_datasets`` results are bit-identical."""
    (ca, aa), (cb, ab) = a, b
    assert ca.keys() == cb.keys()
    for name in ca:
        va, vb = np.asarray(ca[name]), np.asarray(cb[name])
        assert va.shape == vb.shape and va.tobytes() == vb.tobytes(), f"{name} differs"
    assert aa == ab


def assert_same_run(a, b):
    """Two run files hold bit-identical data (every dataset, the active checkpoint, stable attributes)."""
    from dynsim.store import RunReader

    assert_same_datasets(file_datasets(a), file_datasets(b))
    with RunReader(a) as ra, RunReader(b) as rb:
        assert ra.checkpoint["params"].tobytes() == rb.checkpoint["params"].tobytes()


# -- a run in another process, met while it runs (writers, kills, live reads) ------------------------
def long_config(tmp_path):
    """A few seconds of work on a 2-core machine, recorded often, so that a test meets the writer
    while it runs."""
    return write_config(tmp_path / "long.toml", small_config(
        run=dict(replicas=48, steps=150_000), model=dict(width=12), task=dict(n_probes=4, n_sources=2),
        training=dict(method="sgd", batch_size=1),
        record=dict(n_records=80, spacing="linear", block_records=2, checkpoint_seconds=0.05)))


def start_cli(*args):
    """``python -m dynsim.cli ARGS`` started in the background (text pipes)."""
    return subprocess.Popen([sys.executable, "-m", "dynsim.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_records(proc, path, n=3, timeout=120.0):
    """Until ``path`` has ``n`` committed records (its writer is under way); fails if it never does."""
    import time

    from dynsim.store import RunReader, StoreError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with RunReader(path) as rd:
                if rd.n_records >= n:
                    return
        except StoreError:
            pass
        time.sleep(0.02)
    pytest.fail(f"the writer did not get under way: {proc.poll()}")


@pytest.fixture(scope="module")
def long_reference(tmp_path_factory):
    """(config path, file) of an uninterrupted run of ``long_config``: what a met writer must end as."""
    folder = tmp_path_factory.mktemp("reference")
    cfg = long_config(folder)
    out = folder / "reference.h5"
    run_cli("run", cfg, "-o", out, "-q", check=True)
    return cfg, out


def assert_no_leftovers(path):
    """Nothing beside ``path`` that a writer makes on the way (.partial, .lock, .resume-tmp, ...)."""
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)) == [path.name]


def results_script(name: str):
    """A results script of ``data/scripts/`` (``data/scripts/NAME.py``) as a module, for its functions."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "data" / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_tables_complete(text: str):
    """Every markdown table of ``text`` is complete: a header is the row above a separator row, every row
    has its header's width, and no cell is empty, NaN or infinite."""
    import re

    lines = text.splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    assert rows, "no table written"
    width = None
    for i in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[i].strip().strip("|"))]  # "\|" is a pipe in a cell
        if set("".join(cells)) <= set("-"):
            continue
        if i + 1 < len(lines) and set(lines[i + 1].replace("|", "")) <= set("-") and lines[i + 1].startswith("|"):
            width = len(cells)  # a header
        assert len(cells) == width, lines[i]
        for cell in cells:
            assert cell and not re.search(r"\b(nan|[-+]?inf)\b", cell.lower()), lines[i]


def merged_sweep(folder, sweep_toml: str):
    """Run every point of a sweep config (TOML text, written to ``folder/sweep.toml``) in this process,
    one after another, and merge them as ``dynsim sweep`` does; the merged file's path. No Dask: the
    points and the merge are the real ones, only the scheduling is left out."""
    from dynsim.kinds import make_runner
    from dynsim.sweep import load_sweep, merge

    (Path(folder) / "sweep.toml").write_text(sweep_toml)
    sweep = load_sweep(Path(folder) / "sweep.toml")
    (sweep.output / "points").mkdir(parents=True)
    status = {}
    for point in sweep.points:
        result = make_runner(point.config).run(sweep.point_path(point), progress=False)
        assert result.ok, result.message
        status[point.index] = {"code": result.code, "message": result.message}
    return merge(sweep, status)
