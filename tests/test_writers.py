"""One writer per file (issue 20): simultaneous starts, ``run --overwrite`` and ``resume`` against a
live writer never damage the file and are refused with exit 2, naming the live writer; ``dynsim
info`` tells a live writer from a dead one.

Each case compares the file with a reference run of the same config, bit for bit: a second writer
that had truncated, overwritten or unlinked anything would show up there.
"""
import signal
import socket

import pytest

from conftest import assert_no_leftovers, assert_same_run, run_cli, start_cli, wait_for_records

EXIT_BAD_INPUT = 2
REFUSED = "is being written by another dynsim process"


def test_ten_simultaneous_starts_one_writes_nine_are_refused(long_reference, tmp_path):
    cfg, ref = long_reference
    out = tmp_path / "same.h5"
    procs = [start_cli("run", cfg, "-o", out, "-q") for _ in range(10)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0] + [EXIT_BAD_INPUT] * 9, results
    for code, err in results:
        if code == EXIT_BAD_INPUT:  # refused by the lock, or (when the winner had finished) by the file
            assert REFUSED in err or "already exists" in err, err
            assert "Traceback" not in err
    assert_same_run(out, ref)
    assert_no_leftovers(out)


@pytest.mark.parametrize("second", [["run", "CFG", "-o", "OUT", "--overwrite", "-q"], ["resume", "OUT", "-q"]])
def test_overwrite_and_resume_against_a_live_writer_are_refused(long_reference, tmp_path, second):
    cfg, ref = long_reference
    out = tmp_path / "live.h5"
    first = start_cli("run", cfg, "-o", out, "-q")
    wait_for_records(first, out)
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
    assert_no_leftovers(out)


def test_info_tells_a_killed_writer_and_resume_then_completes_it(long_reference, tmp_path):
    cfg, ref = long_reference
    out = tmp_path / "killed.h5"
    first = start_cli("run", cfg, "-o", out, "-q")
    wait_for_records(first, out)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=60)
    info = run_cli("info", out, check=True).stdout
    assert "status      running" in info and "writer      interrupted (writer gone)" in info
    # two resumes at once: one continues the file; the other is refused (or, if it came after the first
    # had finished, finds nothing to do) and changes nothing
    procs = [start_cli("resume", out, "-q") for _ in range(2)]
    results = sorted((p.wait(timeout=300), p.stderr.read()) for p in procs)
    assert results[0][0] == 0, results
    assert (results[1][0] == EXIT_BAD_INPUT and REFUSED in results[1][1]) or results[1][0] == 0, results
    assert_same_run(out, ref)
    assert_no_leftovers(out)
