"""Reading runs (issue 20, item 8): ``dynsim.open_run`` as an xarray Dataset and ``dynsim repair``.

``RunReader`` is the independent reference throughout: every observable, coordinate and attribute
``open_run`` shows must be what the store's own reader reads, bit for bit, on complete,
interrupted, killed and live files and on a point of a merged sweep file. ``repair`` is checked
against the file's own bytes: a killed writer's file differs after repair only in the superblock's
flags and checksum, and HDF5 itself (which verifies that checksum) must open it with plain h5py.
"""
import hashlib
import shutil
import signal
import struct
import subprocess
import sys

import h5py
import numpy as np
import pytest

import dynsim
from dynsim.kinds import make_runner
from dynsim.reading import lookup3, open_run, repair
from dynsim.simple_experiment import Simulation
from dynsim.store import RunReader, StoreError, open_for_reading, sweep_points, write_sweep_file

from conftest import (assert_no_leftovers, assert_same_datasets, assert_same_run, file_datasets, run_cli,
                      small_config, start_cli, wait_for_records)

xr = pytest.importorskip("xarray")

EXIT_BAD_INPUT = 2
REFUSED = "is being written by another dynsim process"
FLAGS = 11  # offset of the status flags in a version 2/3 superblock; its checksum is its last 4 bytes


def _assert_matches_reader(ds, path, group=None):
    """Every observable, dims, step, t and the config of ``ds`` as RunReader reads them, bit for bit."""
    with RunReader(path, group) as rd, open_for_reading(path) as f:
        node = f if group is None else f[group]
        assert sorted(n for n in ds.data_vars if n in rd.observable_names) == sorted(rd.observable_names)
        for name in rd.observable_names:
            expected = rd.observable(name)
            assert ds[name].dims == tuple(node["observables"][name].attrs["dims"].split(",")), name
            assert ds[name].dtype == expected.dtype and ds[name].shape == expected.shape, name
            assert ds[name].values.tobytes() == expected.tobytes(), name  # NaN payloads included
            assert ds[name].attrs["units"] == node["observables"][name].attrs["units"]
        assert ds.sizes["record"] == rd.n_records
        assert ds["step"].dims == ("record",) and ds["step"].values.tobytes() == rd.steps.tobytes()
        assert ds["t"].dims == ("record",) and ds["t"].values.tobytes() == rd.times.tobytes()
        np.testing.assert_array_equal(ds["replica"].values, np.arange(int(rd.attrs["n_replicas"])))
        assert ds.attrs["config"] == rd.config_text
        assert hashlib.sha256(ds.attrs["config"].encode()).hexdigest() == ds.attrs["config_sha256"] == rd.config_digest
        assert ds.attrs["status_n_records"] == rd.n_records
        assert ds.attrs["group"] == (group or "")
        return rd.status


def _file_attrs(path) -> dict:
    """{object: {attribute: value}} of every group and dataset (references compared as what they point at)."""
    out = {}
    with open_for_reading(path) as f:
        def visit(name, obj):
            attrs = {}
            for key, value in obj.attrs.items():
                if key in ("DIMENSION_LIST", "REFERENCE_LIST"):
                    continue  # object references: checked through ds.dims below
                attrs[key] = value.tobytes() if isinstance(value, np.ndarray) else repr(value)
            scales = [[s.name for s in obj.dims[i].values()] for i in range(obj.ndim)] \
                if isinstance(obj, h5py.Dataset) and obj.shape is not None else None
            out[name] = (attrs, scales)
        visit("/", f)
        f.visititems(visit)
    return out


def _changed_bytes(a: bytes, b: bytes) -> set:
    assert len(a) == len(b)
    x, y = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    return set(np.flatnonzero(x != y).tolist())


def _superblock_checksum_range(raw: bytes) -> set:
    size_offsets = raw[9]
    end = 12 + 4 * size_offsets + 4
    return set(range(end - 4, end))


def _without_attrs(ds):
    """The Dataset's variables and coordinates, without the file-level attributes (path, status, ...)."""
    out = ds.copy()
    out.attrs = {}
    return out


# -- complete, interrupted and sweep files ------------------------------------------------------------
@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    out = tmp_path_factory.mktemp("complete") / "run.h5"
    cfg = small_config(record=dict(n_records=8, block_records=3, two_time_waits=2))
    assert Simulation(cfg).run(out, progress=False).code == "completed"
    return out


def test_complete_run_equals_run_reader_bit_for_bit(complete, tmp_path):
    ds = open_run(complete)
    status = _assert_matches_reader(ds, complete)
    assert status["code"] == "completed" and ds.attrs["status_code"] == "completed"
    with RunReader(complete) as rd:
        assert ds.attrs["kind"] == "simple" == rd.attrs["kind"]
        assert ds.attrs["model_width"] == rd.model_attrs["width"]
        assert ds.attrs["training_eta"] == rd.training_attrs["eta"]
        assert ds.attrs["model_hidden_bias"] == 1  # booleans as 0/1: netCDF has no boolean attributes
        assert ds["probe_x"].dims == ("probe", "input_dim")
        assert ds["probe_x"].values.tobytes() == rd.dataset("probes/x").tobytes()
        assert ds["source_x"].values.tobytes() == rd.dataset("sources/x").tobytes()
        assert ds["source_index"].values.tolist() == rd.dataset("sources/index").tolist()
        axes = rd.two_time_axes()
        assert ds["wait"].values.tolist() == axes["t_w"].tolist() and ds["autocorrelation"].dims[-1] == "wait"
        assert ds["wait_t"].values.tobytes() == axes["t_w_time"].tobytes()
        assert ds["ntk"].dims == ("record", "replica", "probe", "probe2")
    # everything is in memory: the Dataset outlives its file
    moved = tmp_path / "moved.h5"
    shutil.copyfile(complete, moved)
    copy = open_run(moved)
    moved.unlink()
    xr.testing.assert_identical(_without_attrs(copy), _without_attrs(ds))
    # the attributes are netCDF-friendly: scipy's netCDF-3 writer (no netCDF library) takes the Dataset
    nc = tmp_path / "run.nc"
    ds.to_netcdf(nc, engine="scipy")
    with xr.open_dataset(nc, engine="scipy") as back:
        assert back.attrs["config"] == ds.attrs["config"]
        np.testing.assert_array_equal(back["loss_train"].values, ds["loss_train"].values)


def test_interrupted_run_shows_only_committed_records(tmp_path):
    cfg = small_config(run=dict(steps=60), record=dict(n_records=20, block_records=2, checkpoint_seconds=0.0))
    reference = tmp_path / "ref.h5"
    Simulation(cfg).run(reference, progress=False)
    sim = Simulation(cfg)
    sim.chunk_steps = 3
    calls = {"n": 0}
    inner = sim.advance

    def interrupt(*args):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return inner(*args)
    sim.advance = interrupt
    out = tmp_path / "cut.h5"
    assert sim.run(out, progress=False).code == "interrupted"
    # records appended after the last commit (a writer killed between append and commit): never shown
    with h5py.File(out, "r+", libver="latest") as f:
        n = int(f["status/n_records"][()])
        for name in ["time/step", "time/t", "observables/record"] + [
                f"observables/{k}" for k in f["observables"] if "dims" in f["observables"][k].attrs]:
            ds = f[name]
            ds.resize((n + 2,) + ds.shape[1:])
            ds[n:] = 12345
    ds = open_run(out)
    status = _assert_matches_reader(ds, out)
    assert status["code"] == "interrupted" and ds.attrs["status_code"] == "interrupted"
    full = open_run(reference)
    assert 0 < ds.sizes["record"] == n < full.sizes["record"]
    # the committed records are the first records of an uninterrupted run, bit for bit
    xr.testing.assert_identical(_without_attrs(ds), _without_attrs(full.isel(record=slice(0, n))))


def test_sweep_point_by_group(tmp_path):
    paths = []
    for seed in (1, 2):
        paths.append(tmp_path / f"seed{seed}.h5")
        Simulation(small_config(run=dict(seed=seed))).run(paths[-1], progress=False)
    merged = write_sweep_file(tmp_path / "sweep.h5", sweep_file="sweep.toml", axes=["run.seed"],
                              points=[(f"{i:04d}", {"run.seed": i + 1}, "completed", "done", p)
                                      for i, p in enumerate(paths)])
    points = sweep_points(merged)
    assert [g for g, _ in points] == ["points/0000", "points/0001"]
    for (group, values), single in zip(points, paths):
        ds = open_run(merged, group=group)
        _assert_matches_reader(ds, merged, group)
        assert ds.attrs["training_seed"] == values["run.seed"]
        xr.testing.assert_identical(_without_attrs(ds), _without_attrs(open_run(single)))
    with pytest.raises(StoreError, match="merged sweep file.*group='points/0000'"):
        open_run(merged)
    with pytest.raises(StoreError, match="has no group '/points/0009'"):
        open_run(merged, group="points/0009")


def test_deep_run_named_inputs_are_variables(tmp_path):
    from dynsim.kinds import parse_config

    cfg = parse_config('[run]\nseed = 3\nreplicas = 2\nsteps = 6\n[model]\nkind = "mlp"\ninput_dim = 3\ndepth = 2\nwidth = 4\n'
                       '[task]\nkind = "gaussian_mixture"\nclasses = 3\nn_train = 12\nn_test = 6\n'
                       '[training]\nmethod = "gd"\neta = 0.2\n'
                       '[record]\nn_records = 3\nbasin_samples = 2\nnoise_inputs = 5\n')
    out = tmp_path / "deep.h5"
    assert make_runner(cfg).run(out, progress=False).code == "completed"
    ds = open_run(out)
    _assert_matches_reader(ds, out)
    with RunReader(out) as rd:
        inputs = rd.inputs()
    assert ds.attrs["kind"] == "mlp"
    assert ds["noise_x"].dims == ("probe", "input_dim")
    assert ds["noise_x"].values.tobytes() == inputs["noise_x"].tobytes()
    assert ds["basin_index"].dims == ("source",)
    assert ds["basin_index"].values.tolist() == inputs["basin_index"].tolist()
    assert "probe_x" not in ds  # a deep run has no probes of the simple kind; its noise inputs are the probe axis


def test_clear_errors_and_lazy_import(tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        open_run(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5" * 100)
    with pytest.raises(StoreError, match="cannot open as HDF5"):
        open_run(junk)
    with pytest.raises(StoreError, match="cannot be repaired.*nothing was changed"):
        repair(junk)
    assert junk.read_bytes() == b"not hdf5" * 100
    with pytest.raises(StoreError, match="no such file"):
        repair(tmp_path / "missing.h5")
    # 'import dynsim' does not import xarray (nor pandas); dynsim.open_run does, on first use
    code = ("import sys, dynsim; assert 'xarray' not in sys.modules and 'pandas' not in sys.modules; "
            "f = dynsim.open_run; import dynsim.reading as r; assert f is r.open_run; "
            "assert 'xarray' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert dynsim.open_run is open_run
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        dynsim.nope  # noqa: B018


# -- repair: the superblock checksum and a flagged file -----------------------------------------------
def test_lookup3_is_hdf5s_superblock_checksum(complete):
    # Bob Jenkins' published test values of hashlittle (lookup3.c, driver5)
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161
    raw = complete.read_bytes()
    assert raw[8] == 3  # dynsim writes superblock version 3 (libver 'latest', for SWMR)
    end = max(_superblock_checksum_range(raw)) + 1
    assert lookup3(raw[:end - 4]) == struct.unpack("<I", raw[end - 4:end])[0]  # the checksum HDF5 wrote
    # and every version 2 object header's checksum in the file (many lengths, multiples of 12 among them)
    lengths = set()
    for at in [i for i in range(len(raw) - 4) if raw[i:i + 4] == b"OHDR"]:
        flags, pos = raw[at + 5], at + 6
        pos += (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)  # times, attribute phase change
        width = 1 << (flags & 3)
        end = pos + width + int.from_bytes(raw[pos:pos + width], "little")
        assert lookup3(raw[at:end]) == struct.unpack("<I", raw[end:end + 4])[0]
        lengths.add((end - at) % 12)
    assert 0 in lengths and len(lengths) > 2


def _flag(path):
    """Set the superblock's open-for-write flags (write + SWMR write) as a killed writer leaves them."""
    raw = bytearray(path.read_bytes())
    end = max(_superblock_checksum_range(raw)) + 1
    raw[FLAGS] = 0x05
    raw[end - 4:end] = struct.pack("<I", lookup3(bytes(raw[:end - 4])))
    path.write_bytes(bytes(raw))


def test_repair_of_a_flagged_file_restores_its_bytes_and_failures_leave_nothing(complete, tmp_path, monkeypatch):
    out = tmp_path / "flagged.h5"
    shutil.copyfile(complete, out)
    clean = out.read_bytes()
    assert "needs no repair" in repair(out) and out.read_bytes() == clean
    _flag(out)
    flagged = out.read_bytes()
    # HDF5 checks the checksum before the flags: this error proves lookup3 wrote a valid superblock
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r")
    # a failed repair changes nothing and leaves no temporary file, nor a lock file
    def failing_replace(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("dynsim.reading.os.replace", failing_replace)
    with pytest.raises(StoreError, match="failed: No space left on device; nothing was changed"):
        repair(out)
    monkeypatch.undo()
    assert out.read_bytes() == flagged
    assert_no_leftovers(out)
    nearly_full = shutil.disk_usage(tmp_path)._replace(free=10)
    monkeypatch.setattr("dynsim.reading.shutil.disk_usage", lambda p: nearly_full)
    with pytest.raises(StoreError, match="needs about .* free"):
        repair(out)
    monkeypatch.undo()
    assert out.read_bytes() == flagged
    assert_no_leftovers(out)
    message = repair(out)
    assert message.startswith(f"repaired {out}") and "\n" not in message
    assert out.read_bytes() == clean  # exactly the file before the flag was set
    assert_no_leftovers(out)


# -- killed and live writers ------------------------------------------------------------------------


def test_killed_writer_file_is_read_then_repaired_then_resumed(long_reference, tmp_path):
    cfg, ref = long_reference
    out = tmp_path / "killed.h5"
    writer = start_cli("run", cfg, "-o", out, "-q")
    wait_for_records(writer, out)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=60)
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(out, "r")
    ds = open_run(out)  # dynsim reads it as it is
    assert _assert_matches_reader(ds, out)["code"] == "running"
    assert 3 <= ds.sizes["record"] < open_run(ref).sizes["record"]
    before_bytes, before_data, before_attrs = out.read_bytes(), file_datasets(out), _file_attrs(out)
    proc = run_cli("repair", out)
    assert proc.returncode == 0 and proc.stdout.startswith(f"dynsim: repaired {out}"), proc.stderr
    assert "'dynsim resume' continues it" in proc.stdout
    with h5py.File(out, "r") as f:  # plain h5py opens it now
        assert f["observables/ntk"].dims[2][0].name == "/observables/probe"
    after = out.read_bytes()
    assert _changed_bytes(before_bytes, after) <= {FLAGS} | _superblock_checksum_range(after)
    assert_same_datasets(file_datasets(out), before_data)  # every dataset byte for byte, root attributes
    assert _file_attrs(out) == before_attrs  # every group's and dataset's attributes, every dimension scale
    xr.testing.assert_identical(open_run(out), ds)
    assert_no_leftovers(out)  # no temporary copy; the killed writer's stale lock file is gone too
    again = run_cli("repair", out)
    assert again.returncode == 0 and "needs no repair" in again.stdout and out.read_bytes() == after
    # the repaired file still resumes, to exactly the file an uninterrupted run writes
    resumed = run_cli("resume", out, "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, ref)
    assert_no_leftovers(out)


def test_live_writer_is_read_and_its_repair_is_refused(long_reference, tmp_path):
    cfg, ref = long_reference
    out = tmp_path / "live.h5"
    writer = start_cli("run", cfg, "-o", out, "-q")
    wait_for_records(writer, out)
    writer.send_signal(signal.SIGSTOP)  # alive and holding its file while the reader and repair meet it
    try:
        ds = open_run(out)
        assert _assert_matches_reader(ds, out)["code"] == "running"
        assert 3 <= ds.sizes["record"] < 80
        before = out.read_bytes()
        proc = run_cli("repair", out)
        assert out.read_bytes() == before
    finally:
        writer.send_signal(signal.SIGCONT)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert REFUSED in proc.stderr and f"pid {writer.pid}" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert writer.wait(timeout=300) == 0, writer.stderr.read()
    assert_same_run(out, ref)
    # what the live read showed is the start of the finished file
    finished = open_run(out).isel(record=slice(0, ds.sizes["record"]))
    xr.testing.assert_identical(_without_attrs(ds), _without_attrs(finished))
    assert_no_leftovers(out)
