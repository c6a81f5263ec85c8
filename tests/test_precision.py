"""run.precision = "float32": the float32 tanh, trainers against the float64 NumPy replay, files, refusals.

Tolerances are in the units of float32 rounding: eps32 = 2^-24 ~ 6e-8 relative per operation.
"""
import h5py
import numpy as np
import pytest

from dynsim.simple_experiment import Simulation
from dynsim.spec import ConfigError

from conftest import small_config
from test_core_dynamics import _advance, _numpy_replay


def test_fast_tanh32_is_within_8_float32_ulp_of_libm():
    from numba import njit

    from dynsim.models.activations import fast_tanh32

    @njit
    def layer(z, h):
        for i in range(z.shape[0]):
            h[i] = fast_tanh32(z[i])

    z = np.concatenate([np.linspace(-12, 12, 400_001), np.logspace(-30, 1.1, 20_001),
                        -np.logspace(-30, 1.1, 20_001)]).astype(np.float32)
    h = np.empty_like(z)
    layer(z, h)
    assert h.dtype == np.float32
    exact = np.tanh(z.astype(np.float64))
    ulp = np.abs(h - exact) / np.spacing(np.abs(exact).astype(np.float32))
    # measured 6.8 ulp (4e-7 relative) near |z| = 0.25: six doublings each add about one rounding
    assert ulp.max() <= 8.0
    assert np.all(h[z == 0] == 0.0)
    big = np.array([9.5, 40.0, -40.0], dtype=np.float32)
    out = np.empty_like(big)
    layer(big, out)
    np.testing.assert_array_equal(out, [1.0, 1.0, -1.0])


@pytest.mark.parametrize("training", [
    dict(method="gd", batch_size=None),
    dict(method="sgd", batch_size=1),
    dict(method="langevin", batch_size=2, temperature=0.01, weight_decay=0.1),
])
def test_float32_trainers_follow_the_float64_numpy_replay(training):
    cfg = small_config(run=dict(precision="float32", replicas=4), training=training,
                       model=dict(activation="tanh"))
    sim = Simulation(cfg)
    theta0, theta = _advance(sim, 25)
    assert theta0.dtype == np.float32 and theta.dtype == np.float32
    # the float64 replay from the same (float32-rounded) start
    expected = _numpy_replay(sim, theta0.astype(np.float64), 25)
    scale = np.abs(expected).max()
    err = np.abs(theta - expected).max() / scale
    # 25 steps, each rounding theta to float32 (6e-8) after float32 sums of ~10 terms: the
    # accumulated difference stays below 25 x 8 eps32 ~ 1.2e-5 of the parameter scale
    assert err < 1.2e-5
    # and it is float32 arithmetic, not float64 stored in float32: the float64 engine differs more
    # from the float32 one than rounding the float64 result to float32 would
    cfg64 = small_config(run=dict(replicas=4), training=training, model=dict(activation="tanh"))
    sim64 = Simulation(cfg64)
    params64 = theta0.astype(np.float64)
    status = np.zeros(4, dtype=np.int8)
    failed = np.full(4, -1, dtype=np.int64)
    sim64.advance(params64, 0, 25, status, failed)
    assert not np.array_equal(theta, params64.astype(np.float32))


def test_float32_run_writes_float32_parameters_and_tracks_the_float64_loss(tmp_path, monkeypatch):
    import dynsim.simple_experiment

    # observables of a float32 run are measured in float64 blocks of replicas: two blocks here
    monkeypatch.setattr(dynsim.simple_experiment, "_MEASURE_BLOCK", 4)
    base = dict(run=dict(replicas=6, steps=600), training=dict(method="sgd", batch_size=1, eta=0.05),
                record=dict(n_records=12, observables=["loss_train", "param_norm"]))
    runs = {}
    for precision in ("float64", "float32"):
        cfg = small_config(**{**base, "run": {**base["run"], "precision": precision}})
        path = tmp_path / f"{precision}.h5"
        result = Simulation(cfg).run(path, progress=False)
        assert result.code == "completed"
        runs[precision] = path
    with h5py.File(runs["float32"], "r") as f32, h5py.File(runs["float64"], "r") as f64:
        for name in ("params/initial", "params/final", "checkpoint/params"):
            assert f32[name].dtype == np.float32, name
            assert f64[name].dtype == np.float64, name
        # 4 bytes per parameter: half the memory of a float64 run
        assert f32["params/final"][...].nbytes * 2 == f64["params/final"][...].nbytes
        np.testing.assert_array_equal(f32["params/initial"][...], f64["params/initial"][...].astype(np.float32))
        loss32 = f32["observables/loss_train"][...]
        loss64 = f64["observables/loss_train"][...]
        assert loss64[-1].mean() < 0.5 * loss64[0].mean()  # training happened
        # 600 SGD steps in float32: the loss tracks the float64 run to 1e-4 relative (measured 3e-6)
        np.testing.assert_allclose(loss32, loss64, rtol=1e-4)
        # |theta| at the last record is the norm of the stored float32 parameters, in float64
        final = f32["params/final"][...].astype(np.float64)
        np.testing.assert_allclose(f32["observables/param_norm"][-1], np.linalg.norm(final, axis=1), rtol=1e-14)
        assert "precision = \"float32\"" in f32["config"][()].decode()


@pytest.mark.parametrize("sections,fix", [
    (dict(run=dict(precision="float32", backend="cuda")), "run.backend = 'cpu'"),
    (dict(run=dict(precision="float32"), training=dict(method="sde", noise="langevin", temperature=0.01, batch_size=None)),
     "run.precision = 'float64'"),
])
def test_float32_is_refused_where_it_is_not_implemented(sections, fix):
    with pytest.raises(ConfigError) as info:
        small_config(**sections)
    assert info.value.field == "run.precision"
    assert fix in str(info.value)
