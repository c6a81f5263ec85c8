"""A full disk (issue 20, item 2): the run stops with exit 2 and one line naming the file, the free
space and what is kept; the file stays at its last checkpoint and resumes to exactly the file an
uninterrupted run writes; no temporary or lock file is left behind.

On a real, small tmpfs where this machine lets the test mount one (root on Linux), and always with
an ``OSError(ENOSPC)`` injected at the store's write call.
"""
import contextlib
import errno
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from analysis.cli import main as analysis_main
from dynsim import store
from dynsim.cli import main as dynsim_main
from dynsim.store import RunReader

from conftest import assert_same_run, run_cli, small_config, write_config


def _config(tmp_path):
    """About 3 MB of NTK records: more than the 3 MB tmpfs holds with the header, less than refused up front."""
    return write_config(tmp_path / "c.toml", small_config(
        run=dict(replicas=64, steps=2000), task=dict(n_probes=8),
        record=dict(n_records=120, spacing="linear", block_records=4, observables=["loss_train", "ntk"])))


def _leftovers(folder: Path, name: str):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(name) and p.name != name)


@contextlib.contextmanager
def _tmpfs(options: str):
    """A tmpfs mounted with ``options`` for the block, or the test skipped where mounting is not allowed."""
    mount = Path("/tmp") / f"dynsim-tmpfs-{uuid.uuid4().hex[:8]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the injected case covers it")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture
def small_tmpfs():
    with _tmpfs("size=3m") as mount:
        yield mount


def test_a_real_full_disk_stops_cleanly_and_the_file_resumes(tmp_path, small_tmpfs):
    cfg = _config(tmp_path)
    reference = tmp_path / "reference.h5"
    run_cli("run", cfg, "-o", reference, "-q", check=True)
    out = small_tmpfs / "run.h5"
    proc = run_cli("run", cfg, "-o", out, "-q")
    assert proc.returncode == 2, proc.stderr  # not a crash (139) or a traceback (1)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"the disk holding {out} is full" in proc.stderr and "dynsim resume" in proc.stderr
    assert _leftovers(small_tmpfs, "run.h5") == []
    with RunReader(out) as rd:
        assert rd.status["code"] == "running" and rd.checkpoint["step"] > 0
    # resuming on the full disk is refused before anything is written, and leaves nothing behind
    before = out.read_bytes()
    again = run_cli("resume", out, "-q")
    assert again.returncode == 2 and "free some space" in again.stderr and "Traceback" not in again.stderr
    assert out.read_bytes() == before and _leftovers(small_tmpfs, "run.h5") == []
    # with room, it completes to the uninterrupted run's file
    moved = tmp_path / "moved.h5"
    shutil.copy(out, moved)
    run_cli("resume", moved, "-q", check=True)
    assert_same_run(moved, reference)


def test_an_injected_enospc_at_the_write_call_stops_cleanly_and_the_file_resumes(tmp_path, monkeypatch, capsys):
    cfg = _config(tmp_path)
    reference = tmp_path / "reference.h5"
    assert dynsim_main(["run", str(cfg), "-o", str(reference), "-q"]) == 0
    original, calls = store.RunWriter._commit_records, []

    def full_at_the_fifth_commit(self, n_records):
        calls.append(n_records)
        if len(calls) == 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, n_records)

    monkeypatch.setattr(store.RunWriter, "_commit_records", full_at_the_fifth_commit)
    out = tmp_path / "run.h5"
    assert dynsim_main(["run", str(cfg), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"writing {out} failed: No space left on device" in err and err.count("\n") == 1
    assert _leftovers(tmp_path, "run.h5") == []
    monkeypatch.setattr(store.RunWriter, "_commit_records", original)
    with RunReader(out) as rd:
        assert rd.n_records == calls[3]  # the four commits before the failure, and nothing after
    assert dynsim_main(["resume", str(out), "-q"]) == 0
    assert_same_run(out, reference)


def test_a_read_only_file_system_is_named_as_such(tmp_path, capsys):
    with _tmpfs("size=1m,ro") as mount:
        cfg = write_config(tmp_path / "c.toml", small_config())
        assert dynsim_main(["run", str(cfg), "-o", str(mount / "run.h5"), "-q"]) == 2
        err = capsys.readouterr().err
        assert "read-only file system" in err and "permission denied" not in err
        # and a report into it
        assert dynsim_main(["run", str(cfg), "-o", str(tmp_path / "run.h5"), "-q"]) == 0
        assert analysis_main(["report", str(tmp_path / "run.h5"), "-o", str(mount)]) == 2
        err = capsys.readouterr().err
        assert "read-only file system" in err and err.count("\n") == 1
