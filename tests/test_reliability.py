"""Crash safety and resume: killed runs stay readable and resume to the uninterrupted result, bit for bit."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from dynsim.kinds import resume
from dynsim.simple_experiment import Simulation
from dynsim.store import RunReader, StoreError

from conftest import SEED, assert_same_run, run_cli, small_config, write_config

N_KILLS = int(os.environ.get("DYNSIM_KILLS", "20"))  # the soak script raises this to 100


def _kill_config(tmp_path):
    """About two seconds of work with a record, block write and checkpoint every few milliseconds."""
    return write_config(tmp_path / "kill.toml", small_config(
        run=dict(replicas=48, steps=60000), model=dict(width=12),
        task=dict(n_probes=4, n_sources=2), training=dict(method="sgd", batch_size=1),
        record=dict(n_records=120, spacing="linear", block_records=2, checkpoint_seconds=0.02)))


def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    cfg = _kill_config(tmp_path)
    reference = tmp_path / "reference.h5"
    started = time.monotonic()
    run_cli("run", cfg, "-o", reference, "-q", check=True)
    # kill times scale with how long a whole run (start-up included) takes on this machine now, so
    # that a loaded machine still gets most kills mid-run; and the loop goes on (up to 4 N_KILLS)
    # until half of N_KILLS did land mid-run
    whole_run = time.monotonic() - started
    out = tmp_path / "killed.h5"
    rng = np.random.default_rng(SEED)
    kills, completed, opened, mid_run = 0, 0, 0, 0
    while (kills < N_KILLS or mid_run < N_KILLS // 2 or not out.exists()) and kills < 4 * N_KILLS:
        if out.exists():
            with RunReader(out) as rd:
                rd.summary()                         # every killed file opens and summarises
                status = rd.status["code"]
                mid_run += status == "running" and rd.checkpoint["step"] > 0
            opened += 1
            if status == "completed":
                assert_same_run(out, reference)
                completed += 1
                out.unlink()
                continue
        args = ["resume", out, "-q"] if out.exists() else ["run", cfg, "-o", out, "-q"]
        proc = subprocess.Popen([sys.executable, "-m", "dynsim.cli", *map(str, args)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, err = proc.communicate(timeout=rng.uniform(0.1, 1.0) * whole_run)
            assert proc.returncode == 0, err.decode()
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
    # finish the last one and compare
    while True:
        with RunReader(out) as rd:
            if rd.status["code"] == "completed":
                break
        run_cli("resume", out, "-q", check=True)
    assert_same_run(out, reference)
    # most kills must land while a run is under way (not before the process got going), or the
    # test would not be exercising recovery
    assert kills >= N_KILLS and mid_run >= N_KILLS // 2, (kills, mid_run, completed)
    print(f"kills={kills} mid_run={mid_run} completed_between={completed}")


class _InterruptAfter:
    """Wraps Simulation.advance to raise KeyboardInterrupt (as SIGTERM/Ctrl-C do) on its n-th call."""

    def __init__(self, sim, n):
        self.sim, self.n, self.calls = sim, n, 0
        self.inner = sim.advance

    def __call__(self, *args):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.inner(*args)


TRAINERS = {
    "gd": dict(training=dict(method="gd", batch_size=None)),
    "sgd": dict(training=dict(method="sgd", batch_size=2)),
    "sgd_epochs": dict(training=dict(method="sgd", batch_size=3, sampling="without_replacement")),
    "langevin": dict(training=dict(method="langevin", batch_size=None, temperature=0.01)),
    "sgld": dict(training=dict(method="langevin", batch_size=1, temperature=0.01, weight_decay=0.01)),
    "sgd_float32": dict(run=dict(precision="float32"), training=dict(method="sgd", batch_size=2)),
    "sde_sgd_noise": dict(training=dict(method="sde", noise="sgd", batch_size=2, dt=0.02)),
    "sde_langevin_heun": dict(training=dict(method="sde", noise="langevin", scheme="heun", temperature=0.01,
                                            batch_size=None)),
    "frozen_replicas": dict(model=dict(activation="linear"), run=dict(replicas=8, on_divergence="freeze"),
                            training=dict(method="gd", batch_size=None, eta=0.5)),
}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_interrupted_run_resumes_bit_identically_for_every_trainer(tmp_path, name):
    overrides = TRAINERS[name]
    run = {**dict(steps=400), **overrides.get("run", {})}
    cfg = small_config(**{**overrides, "run": run,
                          "record": dict(n_records=30, block_records=4, checkpoint_seconds=0.0)})
    reference = tmp_path / "ref.h5"
    expected = Simulation(cfg).run(reference, progress=False)
    sim = Simulation(cfg)
    sim.chunk_steps = 7                       # many chunks, so the interrupt lands mid-schedule
    sim.advance = _InterruptAfter(sim, 25)
    out = tmp_path / "interrupted.h5"
    first = sim.run(out, progress=False)
    assert first.code == "interrupted" and 0 < first.last_step < 400
    result = resume(out, progress=False)
    assert result.code == expected.code
    assert_same_run(out, reference)


def test_resume_refusals_are_clear(tmp_path):
    done = tmp_path / "done.h5"
    cfg = small_config()
    Simulation(cfg).run(done, progress=False)
    assert resume(done, progress=False).message.endswith("already complete; nothing to resume")
    other = small_config(run=dict(seed=SEED + 1))
    with pytest.raises(StoreError, match="different config"):
        resume(done, expect_config=other)
    proc = run_cli("resume", tmp_path / "missing.h5")
    assert proc.returncode == 2 and "no such file" in proc.stderr
    diverged_cfg = write_config(tmp_path / "d.toml", small_config(
        model=dict(activation="linear"), run=dict(replicas=8, steps=200),
        training=dict(method="gd", batch_size=None, eta=0.5)))
    assert run_cli("run", diverged_cfg, "-o", tmp_path / "d.h5", "-q").returncode == 3
    proc = run_cli("resume", tmp_path / "d.h5")
    assert proc.returncode == 2 and "resuming would diverge again" in proc.stderr


def test_run_refuses_to_start_without_disk_space(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    cfg = small_config(run=dict(replicas=200), record=dict(compression="none"))
    # sizes below a GiB in MB (issue 20: "0.00 GiB free" told the user nothing)
    with pytest.raises(StoreError, match=r"needs about [0-9.]+ MB but .* has 0\.0 MB free; record fewer observables"):
        Simulation(cfg).run(tmp_path / "big.h5", progress=False)
    assert not (tmp_path / "big.h5").exists()


@pytest.mark.parametrize("args,fragment", [
    (["run", "CFG", "-o", "BLOCKER/out.h5"], "cannot create the output directory"),
    (["run", "CFG", "-o", "DIR"], "is a directory"),
    (["run", "CFG", "--backend", "tpu"], "invalid choice: 'tpu'"),
    (["resume", "NOTES"], "not an HDF5 file"),
    (["resume", "FOREIGN"], "not a dynsim run"),
    (["info", "EMPTY"], "empty"),
    (["run"], "the following arguments are required: config"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_cli_input_one_clear_message(tmp_path, args, fragment):
    cfg = write_config(tmp_path / "c.toml", small_config())
    (tmp_path / "blocker").write_text("a file where a directory is expected")
    (tmp_path / "dir").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.h5").write_bytes(b"")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    names = {"CFG": cfg, "BLOCKER/out.h5": tmp_path / "blocker" / "out.h5", "DIR": tmp_path / "dir",
             "NOTES": tmp_path / "notes.txt", "FOREIGN": tmp_path / "foreign.h5", "EMPTY": tmp_path / "empty.h5"}
    proc = run_cli(*[names.get(a, a) for a in args])
    assert proc.returncode == 2
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


_KILL_INSIDE = r"""
import os, signal, sys
from dynsim import store
from dynsim.kinds import load_config
from dynsim.simple_experiment import Simulation

where, config, out = sys.argv[1:4]
commit = {"records": "_commit_records", "checkpoint": "_commit_checkpoint"}[where]
original, calls = getattr(store.RunWriter, commit), []

def die_at_fourth_commit(self, *args):
    calls.append(1)
    if len(calls) == 4:                 # the data before this commit point is already written
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, *args)

setattr(store.RunWriter, commit, die_at_fourth_commit)
Simulation(load_config(config)).run(out, progress=False)
"""


@pytest.mark.parametrize("where", ["records", "checkpoint"])
def test_kill_between_write_and_commit_loses_nothing_committed(tmp_path, where):
    """SIGKILL after a record block (or a checkpoint slot) is written but before its commit point."""
    cfg = write_config(tmp_path / "c.toml", small_config(run=dict(steps=300),
                                                        record=dict(n_records=40, block_records=2)))
    reference = tmp_path / "ref.h5"
    run_cli("run", cfg, "-o", reference, "-q", check=True)
    out = tmp_path / "killed.h5"
    proc = subprocess.run([sys.executable, "-c", _KILL_INSIDE, where, str(cfg), str(out)], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with RunReader(out) as rd, RunReader(reference) as ref:
        n = rd.status["n_records"]
        assert rd.status["code"] == "running" and n > 0
        # the committed records equal the reference's first records, bit for bit
        assert rd.observable("ntk").tobytes() == ref.observable("ntk")[:n].tobytes()
        # and the file holds uncommitted rows beyond them (records) or an uncommitted slot (checkpoint)
        if where == "records":
            assert rd.file["time/step"].shape[0] > n
    run_cli("resume", out, "-q", check=True)
    assert_same_run(out, reference)


def test_checkpoint_every_k_steps(tmp_path, monkeypatch):
    from dynsim import store

    steps_seen = []
    original = store.RunWriter.checkpoint
    monkeypatch.setattr(store.RunWriter, "checkpoint",
                        lambda self, step, *a: (steps_seen.append(step), original(self, step, *a))[1])
    cfg = small_config(run=dict(steps=1000), record=dict(n_records=3, checkpoint_steps=300,
                                                         checkpoint_seconds=1e9, block_records=100))
    Simulation(cfg).run(tmp_path / "k.h5", progress=False)
    # header checkpoint at 0, then every 300 steps, then the final one at 1000
    assert steps_seen == [0, 300, 600, 900, 1000]


def test_sigterm_stops_cleanly_and_resume_is_bit_identical(tmp_path):
    """Pre-emption by SIGTERM: exit 130, status 'interrupted', checkpoint consistent with its step."""
    cfg = _kill_config(tmp_path)
    reference = tmp_path / "reference.h5"
    run_cli("run", cfg, "-o", reference, "-q", check=True)
    out = tmp_path / "term.h5"
    proc = subprocess.Popen([sys.executable, "-m", "dynsim.cli", "run", str(cfg), "-o", str(out), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # wait until the run is under way: a few of its 120 records committed. A fixed delay after the
    # file appears is not enough on a warm cache: the run (a second or two) may end within it, and a
    # SIGTERM that lands during interpreter shutdown, after Python has restored the default
    # handlers, kills the process with -15 instead of exiting 130.
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with RunReader(out) as rd:
                if rd.n_records >= 4:
                    break
        except StoreError:  # not created yet
            pass
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived on this machine")
    assert proc.returncode == 130, err.decode()
    assert "interrupted at step" in err.decode()
    with RunReader(out) as rd:
        assert rd.status["code"] == "interrupted"
    run_cli("resume", out, "-q", check=True)
    assert_same_run(out, reference)
