"""The state trajectory (issue 25): ``[record] params`` stores theta at every record, resume
continues it bit for bit across a kill, and ``dynsim measure`` recomputes, from it, exactly the
observables recorded during the run (same parameters, same compiled kernels, same data), or new
ones on new probes that ``analysis report`` takes like any run."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import dynsim
from analysis.report import write_report
from dynsim.cli import main as dynsim_main
from dynsim.config import dump_toml
from dynsim.kinds import make_runner, parse_config
from dynsim.store import RunReader, StoreError

from conftest import assert_same_run, run_cli, small_config, write_config

EVERY_SIMPLE = ["loss_train", "loss_test", "param_norm", "ntk", "response", "response_linear", "feature_spectrum",
                "effective_rank", "participation_ratio", "input_grad_norm", "flip_distance", "output"]

CASES = {
    "simple, every observable": dict(model=dict(input_dim=2, width=5), task=dict(kind="teacher", n_train=10),
                                     record=dict(observables=EVERY_SIMPLE)),
    "simple, classification": dict(task=dict(kind="encoding", labels="pm1", n_train=12),
                                   training=dict(loss="cross_entropy")),
    "simple, 4 outputs": dict(model=dict(input_dim=1, width=6, outputs=4), task=dict(kind="encoding", n_train=12)),
    "float32": dict(run=dict(precision="float32")),
    "deep MLP": dict(model=dict(kind="mlp", input_dim=3, depth=2, width=6),
                     task=dict(kind="gaussian_mixture", classes=3, n_train=12, n_test=10),
                     record=dict(basin_samples=2, basin_directions=4, basin_bisections=6, noise_inputs=6,
                                 weight_basin_samples=12, weight_basin_directions=2)),
}


def _config(case, params=3):
    tables = dict(run=dict(seed=11, replicas=5, steps=200), training=dict(method="sgd", batch_size=2, eta=0.05),
                  record=dict(n_records=8, block_records=3, params=params))
    for name, values in CASES[case].items():
        tables[name] = {**tables.get(name, {}), **values}
    if tables.get("model", {}).get("kind") == "mlp":
        tables["training"]["loss"] = "softmax_cross_entropy"
    return parse_config(dump_toml(tables))


@pytest.mark.parametrize("case", list(CASES))
def test_measured_afterwards_equals_recorded_bit_for_bit(case, tmp_path):
    cfg = _config(case)
    run = tmp_path / "run.h5"
    assert make_runner(cfg).run(run, progress=False).ok
    out = tmp_path / "measured.h5"
    assert dynsim_main(["measure", str(run), "-o", str(out), "-q"]) == 0
    with RunReader(run) as a, RunReader(out) as b:
        traj = a.trajectory()
        assert traj.shape == (a.n_records, 3, int(a.attrs["n_params"])) and traj.dtype == cfg.run.dtype
        # the trajectory is the run's state: its last row is the final parameters of those replicas
        assert np.array_equal(traj[-1], a.dataset("params/final")[:3])
        assert b.attrs["measured_from_sha256"] == a.config_digest and np.array_equal(b.steps, a.steps)
        names = [n for n in a.observable_names if n not in ("autocorrelation", "msd")]
        assert sorted(b.observable_names) == sorted(names)
        for name in names:
            recorded, measured = a.observable(name)[:, :3], b.observable(name)
            assert recorded.tobytes() == measured.tobytes(), name


def test_trajectory_survives_a_kill_and_resume_bit_for_bit(tmp_path):
    cfg = write_config(tmp_path / "c.toml", small_config(
        run=dict(replicas=24, steps=60_000), model=dict(width=12), training=dict(method="sgd", batch_size=1),
        record=dict(n_records=60, spacing="linear", block_records=2, checkpoint_seconds=0.05, params=True)))
    reference = tmp_path / "reference.h5"
    run_cli("run", cfg, "-o", reference, "-q", check=True)
    out = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-m", "dynsim.cli", "run", str(cfg), "-o", str(out), "-q"],
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with RunReader(out) as rd:
                if rd.checkpoint["step"] > 0 and rd.n_records >= 6:
                    break
        except StoreError:
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    # killed about a tenth of the way in; a run that ended first would make the test vacuous
    assert proc.returncode == -signal.SIGKILL, "the run finished before it was killed: lengthen it"
    with RunReader(out) as rd:
        assert 0 < rd.n_records < 60 and rd.trajectory().shape[0] == rd.n_records
    run_cli("resume", out, "-q", check=True)
    assert_same_run(out, reference)  # every dataset, /trajectory/params included


def test_new_probe_grid_goes_through_the_report_and_matches_the_kernel(tmp_path):
    cfg = _config("simple, every observable")
    run = tmp_path / "run.h5"
    make_runner(cfg).run(run, progress=False)
    ds = dynsim.measure(run, observables=["loss_train", "output", "ntk"], probe_grid_points=4)
    assert ds.sizes["probe"] == 16 and ds.sizes["replica"] == 3
    # the output on the grid, recomputed independently from the trajectory by the model itself
    with RunReader(run) as rd:
        theta = rd.trajectory()[-1, 1]
        x_train = rd.dataset("data/x_train")
    grid = dynsim.trajectory.probe_grid(x_train, 4)
    expected = cfg.model.outputs_of(theta, grid)
    np.testing.assert_allclose(ds.output.values[-1, 1, :, 0], expected, rtol=1e-12, atol=1e-14)  # one output
    out = tmp_path / "grid.h5"
    assert dynsim_main(["measure", str(run), "-o", str(out), "--probe-grid", "4", "-q"]) == 0
    text = write_report([str(out)], tmp_path / "report").read_text()
    with RunReader(out) as rd:
        final = rd.observable("loss_train")[-1]
    assert f"final training loss: mean {np.mean(final):.4g}" in text and "NTK" in text


def test_measure_refuses_what_it_cannot_do(tmp_path, capsys):
    plain = tmp_path / "plain.h5"
    make_runner(_config("simple, every observable", params=None)).run(plain, progress=False)
    assert dynsim_main(["measure", str(plain), "-o", str(tmp_path / "m.h5")]) == 2
    assert "records no parameter trajectory" in capsys.readouterr().err
    with_traj = tmp_path / "traj.h5"
    make_runner(_config("deep MLP")).run(with_traj, progress=False)
    assert dynsim_main(["measure", str(with_traj), "-o", str(tmp_path / "m.h5"), "--probe-grid", "3"]) == 2
    assert "measures no probe inputs" in capsys.readouterr().err
    assert dynsim_main(["measure", str(with_traj), "-o", str(with_traj)]) == 2
    assert "is the run itself" in capsys.readouterr().err
    assert not (tmp_path / "m.h5").exists()


def test_disk_estimate_counts_the_trajectory(tmp_path, monkeypatch):
    """A trajectory that cannot fit is refused up front, like records that cannot."""
    import shutil
    from collections import namedtuple

    cfg = small_config(run=dict(replicas=2000, steps=100), record=dict(n_records=200, spacing="linear",
                                                                       observables=["loss_train"]))
    # the loss records fit (about 1.4 MB with the parameter arrays); 2000 replicas x 31 parameters x 8 B
    # x 200 records, even compressed 4x, do not
    free = 3_000_000
    monkeypatch.setattr(shutil, "disk_usage", lambda p: namedtuple("u", "total used free")(10**9, 0, free))
    from dynsim.simple_experiment import Simulation

    assert Simulation(cfg).run(tmp_path / "a.h5", progress=False).ok
    traj = parse_config(cfg.to_toml().replace("[record]", "[record]\nparams = true"))
    with pytest.raises(StoreError, match="record fewer observables or replicas"):
        Simulation(traj).run(tmp_path / "b.h5", progress=False)
