"""The HDF5 store: bit-exact round trips, block writes, and clear errors for files that are not runs."""
import h5py
import numpy as np
import pytest

from dynsim.kinds import stored_config
from dynsim.simple_experiment import Simulation
from dynsim.observables import allocate
from dynsim.store import RunReader, RunWriter, StoreError

from conftest import SEED, replace, small_config


def _synthetic_records(shape_source, n_records, rng):
    """Random record buffers including values that lossy handling would change (NaN, inf, subnormal)."""
    records = []
    for k in range(n_records):
        buffers = {name: rng.standard_normal(buf.shape) * 10.0 ** rng.integers(-300, 300, buf.shape)
                   for name, buf in shape_source.items()}
        buffers["loss_train"].flat[0] = np.nan
        buffers["loss_test"].flat[0] = np.inf
        buffers["param_norm"].flat[0] = 5e-324
        records.append((k * 7, k * 0.7, buffers))
    return records


@pytest.mark.parametrize("compression", ["gzip", "lzf", "none"])
def test_write_then_read_is_bit_exact(tmp_path, rng, compression):
    cfg = small_config(record=dict(compression=compression, block_records=4),
                       task=dict(kind="encoding"))
    sim = Simulation(cfg)
    names = cfg.observables
    params = sim.initial_params()
    shapes = allocate(names, cfg.run.replicas, cfg.task.n_probes, cfg.task.n_sources)
    records = _synthetic_records({n: shapes[n] for n in names}, 11, rng)  # 11 = two full blocks + 3
    with RunWriter(tmp_path / "r.h5", config=cfg, data=sim.data, params_initial=params,
                   observables=names) as writer:
        for step, t, buffers in records:
            writer.append(step, t, buffers)
            if writer.block_full:
                writer.checkpoint(step, params, np.full(params.shape[0], -1))
        writer.finish(70, params * 2, "completed", "done")
    with RunReader(tmp_path / "r.h5") as rd:
        np.testing.assert_array_equal(rd.steps, [r[0] for r in records])
        np.testing.assert_array_equal(rd.times, [r[1] for r in records])
        for name in names:
            stored = rd.observable(name)
            expected = np.stack([r[2][name] for r in records])
            assert stored.tobytes() == expected.tobytes(), name   # bitwise, NaN payloads included
        assert rd.dataset("params/initial").tobytes() == params.tobytes()
        assert rd.dataset("params/final").tobytes() == (params * 2).tobytes()
        np.testing.assert_array_equal(rd.dataset("data/x_train"), sim.data.x_train)
        assert stored_config(rd) == cfg.resolved()
        # dimension scales are attached, so netCDF-aware readers see named dims
        ds = rd.file["observables/ntk"]
        assert [ds.dims[i][0].name.split("/")[-1] for i in range(4)] == ["record", "replica", "probe", "probe2"]


def test_writer_refuses_to_overwrite(tmp_path):
    cfg = small_config()
    path = tmp_path / "exists.h5"
    path.write_bytes(b"precious")
    sim = Simulation(cfg)
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        RunWriter(path, config=cfg, data=sim.data, params_initial=sim.initial_params(), observables=())
    assert path.read_bytes() == b"precious"


def _foreign_hdf5(path):
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_text("not hdf5 at all\n"), "not an HDF5 file"),
    (_foreign_hdf5, "not a dynsim run"),
    (lambda p: p.mkdir(), "is a directory"),
])
def test_reader_rejects_non_runs_clearly(tmp_path, make, message):
    path = tmp_path / "bad.h5"
    make(path)
    with pytest.raises(StoreError, match=message):
        RunReader(path)


def test_reader_rejects_truncated_file(tmp_path):
    path = tmp_path / "full.h5"
    Simulation(small_config()).run(path, progress=False)
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(StoreError):
        RunReader(cut)


def test_reader_rejects_other_format_version(tmp_path):
    path = tmp_path / "v.h5"
    Simulation(replace(small_config(), run=dict(seed=SEED))).run(path, progress=False)
    with h5py.File(path, "a", libver="latest") as f:
        f.attrs["format_version"] = 99
    with pytest.raises(StoreError, match="format_version 99"):
        RunReader(path)
