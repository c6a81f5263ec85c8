"""One writer per file (issue 20): simultaneous starts, ``run --overwrite`` and ``resume`` against a
live writer never damage the file and are refused with exit 2, naming the live writer; ``dynsim
info`` tells a live writer from a dead one.

Each case compares the file with a reference run of the same config, bit for bit: a second writer
that had truncated, overwritten or unlinked anything would show up there.
"""
import signal
import socket
import subprocess
import sys
import time

import pytest

from dynsim.store import RunReader, StoreError

from conftest import assert_same_run, run_cli, small_config, write_config

EXIT_BAD_INPUT = 2
REFUSED = "is being written by another dynsim process"


def _long_config(tmp_path):
    """A few seconds of work on this machine, recorded often, so other processes meet it while it runs."""
    return write_config(tmp_path / "long.toml", small_config(
        run=dict(replicas=48, steps=150_000), model=dict(width=12), task=dict(n_probes=4, n_sources=2),
        training=dict(method="sgd", batch_size=1),
        record=dict(n_records=80, spacing="linear", block_records=2, checkpoint_seconds=0.05)))


def _start(*args):
    return subprocess.Popen([sys.executable, "-m", "dynsim.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_records(proc, path, n=3, timeout=120.0):
    """Until ``path`` has ``n`` committed records (its writer is under way), or the writer ended."""
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


def _no_leftovers(path):
    assert sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name)) == [path.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    cfg = _long_config(tmp)
    out = tmp / "reference.h5"
    run_cli("run", cfg, "-o", out, "-q", check=True)
    return cfg, out


def test_ten_simultaneous_starts_one_writes_nine_are_refused(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "same.h5"
    procs = [_start("run", cfg, "-o", out, "-q") for _ in range(10)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [EXIT_BAD_INPUT] * 9, results
    for code, err in results:
        if code == EXIT_BAD_INPUT:  # refused by the lock, or (when the winner had finished) by the file
            assert REFUSED in err or "already exists" in err, err
            assert "Traceback" not in err
    assert_same_run(out, ref)
    _no_leftovers(out)


@pytest.mark.parametrize("second", [["run", "CFG", "-o", "OUT", "--overwrite", "-q"], ["resume", "OUT", "-q"]])
def test_overwrite_and_resume_against_a_live_writer_are_refused(reference, tmp_path, second):
    cfg, ref = reference
    out = tmp_path / "live.h5"
    first = _start("run", cfg, "-o", out, "-q")
    _wait_for_records(first, out)
    # paused, the first writer is alive and holding its file for as long as the second one needs
    first.send_signal(signal.SIGSTOP)
    try:
        info = run_cli("info", out, check=True).stdout
        assert f"writer      running (pid {first.pid} on {socket.gethostname()})" in info
        proc = run_cli(*[{"CFG": cfg, "OUT": out}.get(a, a) for a in second])
    finally:
        first.send_signal(signal.SIGCONT)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert REFUSED in proc.stderr and f"pid {first.pid}" in proc.stderr and "Traceback" not in proc.stderr
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert_same_run(out, ref)
    _no_leftovers(out)


def test_info_tells_a_killed_writer_and_resume_then_completes_it(reference, tmp_path):
    cfg, ref = reference
    out = tmp_path / "killed.h5"
    first = _start("run", cfg, "-o", out, "-q")
    _wait_for_records(first, out)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    info = run_cli("info", out, check=True).stdout
    assert "status      running" in info and "writer      interrupted (writer gone)" in info
    # two resumes at once: one continues the file; the other is refused (or, if it came after the first
    # had finished, finds nothing to do) and changes nothing
    procs = [_start("resume", out, "-q") for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert results[0][0] == 0, results
    assert (results[1][0] == EXIT_BAD_INPUT and REFUSED in results[1][1]) or results[1][0] == 0, results
    assert_same_run(out, ref)
    _no_leftovers(out)
