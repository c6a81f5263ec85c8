"""The command line end to end, in subprocesses: runs, determinism, divergence, bad input."""
from pathlib import Path

import numpy as np
import pytest

from dynsim.store import RunReader

from conftest import assert_same_run, file_datasets, run_cli, small_config, write_config

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_config_runs_and_info_describes_it(tmp_path):
    """The README's main command, on the shipped quickstart config."""
    out = tmp_path / "quickstart.h5"
    proc = run_cli("run", REPO / "data/configs/quickstart.toml", "-o", out, "--quiet", check=True)
    assert proc.stdout == ""  # --quiet
    info = run_cli("info", out, check=True).stdout
    for fragment in ("model       simple: input_dim=1 width=32 activation=tanh", "training    sgd eta=0.05",
                     "ntk", "response_linear", "status      completed"):
        assert fragment in info
    with RunReader(out) as rd:
        loss = rd.observable("loss_train")
    # SGD learns the encoding task: the ensemble's mean loss falls by more than a factor of 5
    assert np.mean(loss[-1]) < np.mean(loss[0]) / 5


def test_output_defaults_to_next_to_the_config(tmp_path):
    cfg = write_config(tmp_path / "exp.toml", small_config())
    proc = run_cli("run", cfg, check=True)
    assert (tmp_path / "exp.h5").exists()
    assert f"writing {tmp_path / 'exp.h5'}" in proc.stderr


def test_same_seed_gives_identical_files_for_1_and_2_threads(tmp_path):
    cfg = write_config(tmp_path / "c.toml", small_config(run=dict(replicas=7, steps=300)))
    run_cli("run", cfg, "-o", tmp_path / "t1.h5", "-q", env={"NUMBA_NUM_THREADS": "1"}, check=True)
    run_cli("run", cfg, "-o", tmp_path / "t2.h5", "-q", env={"NUMBA_NUM_THREADS": "2"}, check=True)
    assert_same_run(tmp_path / "t1.h5", tmp_path / "t2.h5")


def test_compiled_kernels_agree_with_pure_python(tmp_path):
    """NUMBA_DISABLE_JIT=1 runs the same kernels as plain Python: same numbers to 1e-12."""
    cfg = write_config(tmp_path / "c.toml", small_config(run=dict(replicas=2, steps=15), model=dict(width=3),
                                                         task=dict(n_probes=3, n_sources=2)))
    run_cli("run", cfg, "-o", tmp_path / "jit.h5", "-q", check=True)
    run_cli("run", cfg, "-o", tmp_path / "py.h5", "-q", env={"NUMBA_DISABLE_JIT": "1"}, check=True)
    a, _ = file_datasets(tmp_path / "jit.h5")
    b, _ = file_datasets(tmp_path / "py.h5")
    for name in ("params/final", "observables/ntk", "observables/response", "observables/loss_train"):
        # libm's transcendental functions are the same in both; only compiler-level rounding differs
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-15)


def _diverging_config(mode):
    """Linear network at eta = 0.5: GD is unstable for some replicas' initialisations, not all."""
    return small_config(model=dict(activation="linear"), run=dict(replicas=8, steps=2000, on_divergence=mode),
                        training=dict(method="gd", batch_size=None, eta=0.5), record=dict(n_records=40))


def _expected_failures():
    """Each replica's failure step from the compiled kernel alone (no file, no CLI), -1 if none."""
    from dynsim.simple_experiment import Simulation

    sim = Simulation(_diverging_config("freeze"))
    params = sim.initial_params()
    status, failed = np.zeros(8, dtype=np.int8), np.full(8, -1, dtype=np.int64)
    sim.advance(params, 0, 2000, status, failed)
    assert 0 < np.sum(failed >= 0) < 8, "the config must make some but not all replicas diverge"
    return failed


def test_divergence_stops_run_names_replica_and_step_and_keeps_records(tmp_path):
    failed = _expected_failures()
    first = int(np.argmin(np.where(failed >= 0, failed, np.iinfo(np.int64).max)))
    out = tmp_path / "div.h5"
    proc = run_cli("run", write_config(tmp_path / "stop.toml", _diverging_config("stop")), "-o", out, "-q")
    assert proc.returncode == 3
    assert "diverged" in proc.stderr and f"replica {first} at step {failed[first]}" in proc.stderr
    assert "Traceback" not in proc.stderr
    with RunReader(out) as rd:
        st = rd.status
        assert (st["code"], st["replica"], st["failed_step"]) == ("diverged", first, failed[first])
        steps, loss = rd.steps, rd.observable("loss_train")
    # every scheduled record before the failure is there (log spacing: the first steps are all
    # records). failed_step s means that the parameters after s updates, or their gradient, were not
    # finite: the record at s itself exists only in the second case.
    assert len(steps) in (failed[first], failed[first] + 1)
    np.testing.assert_array_equal(steps, np.arange(len(steps)))
    # healthy before; in the last record the squared loss may already overflow (|f - y| > 1e154)
    # while its gradient f - y is still finite
    assert np.all(np.isfinite(loss[:-1]))


def test_divergence_freeze_keeps_other_replicas_running(tmp_path):
    failed = _expected_failures()
    out = tmp_path / "freeze.h5"
    proc = run_cli("run", write_config(tmp_path / "freeze.toml", _diverging_config("freeze")), "-o", out, "-q")
    assert proc.returncode == 3
    with RunReader(out) as rd:
        np.testing.assert_array_equal(rd.dataset("status/replica_failed_step"), failed)
        loss = rd.observable("loss_train")
        assert rd.steps[-1] == 2000
    assert np.all(np.isfinite(loss[-1, failed < 0]))


@pytest.mark.parametrize("args,fragment", [
    (["run", "missing.toml"], "no such config file"),
    (["info", "missing.h5"], "no such file"),
    (["info", "notes.txt"], "not an HDF5 file"),
])
def test_bad_input_gives_one_clear_line_and_exit_2(tmp_path, args, fragment):
    (tmp_path / "notes.txt").write_text("hello")
    args = [str(tmp_path / a) if a.endswith((".toml", ".h5", ".txt")) else a for a in args]
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_value_exit_2_and_existing_output_untouched(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[training]\neta = -1\n")
    out = tmp_path / "keep.h5"
    out.write_bytes(b"earlier results")
    proc = run_cli("run", cfg, "-o", out)
    assert proc.returncode == 2 and "training.eta" in proc.stderr
    good = write_config(tmp_path / "good.toml", small_config())
    proc = run_cli("run", good, "-o", out)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    assert out.read_bytes() == b"earlier results"
    assert run_cli("run", good, "-o", out, "--overwrite", "-q").returncode == 0


def test_derive_prints_the_relu_ntk_in_latex():
    proc = run_cli("derive", "--activation", "relu", "--quantity", "ntk", "--latex", check=True)
    assert r"\Theta" in proc.stdout
