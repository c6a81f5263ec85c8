"""Bad files and arguments at the command line (issue 20, items 4 and 6): each case exits 2 with one
line naming the file or argument and the fix, and changes nothing. In-process (``dynsim.cli.main``,
``analysis.cli.main``) so that the table stays fast; subprocesses only where the behaviour is the
process's (a closed output pipe)."""
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

from analysis.cli import main as analysis_main
from dynsim.cli import main as dynsim_main
from dynsim.kinds import parse_config
from dynsim.simple_experiment import Simulation

from conftest import small_config, write_config


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """An interrupted run (Ctrl-C after a few chunks) recording the NTK: resumable as it is."""
    folder = tmp_path_factory.mktemp("interrupted")
    cfg = small_config(run=dict(steps=400), record=dict(n_records=10, block_records=2,
                                                        observables=["loss_train", "ntk"]))
    sim = Simulation(cfg)
    sim.chunk_steps = 20
    calls = []
    inner = sim.advance

    def stop_after_five(*args):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return inner(*args)

    sim.advance = stop_after_five
    path = folder / "cut.h5"
    assert sim.run(path, progress=False).code == "interrupted"
    return path


def _damaged(source, folder, deleted):
    path = folder / "damaged.h5"
    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        del f[deleted]
    return path


@pytest.mark.parametrize("command, deleted, fragment", [
    ("resume", "observables/ntk", "'/observables/ntk' is missing"),
    ("resume", "checkpoint/params", "damaged, it cannot be resumed"),
    ("resume", "data/x_train", "damaged, it cannot be resumed"),
    ("info", "checkpoint/params", "'/checkpoint/params' or '/checkpoint/step') is missing"),
])
def test_damaged_file_is_one_clear_line(interrupted, tmp_path, capsys, command, deleted, fragment):
    path = _damaged(interrupted, tmp_path, deleted)
    before = path.read_bytes()
    assert dynsim_main([command, str(path), "-q"] if command == "resume" else [command, str(path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and str(path) in err and err.count("\n") == 1
    assert path.read_bytes() == before  # refused before anything was written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.h5"]  # no .resume-tmp, no .lock


def test_resuming_a_complete_file_says_there_is_nothing_to_do(interrupted, tmp_path, capsys):
    path = tmp_path / "run.h5"
    shutil.copy(interrupted, path)
    assert dynsim_main(["resume", str(path), "-q"]) == 0
    assert dynsim_main(["resume", str(path)]) == 0
    out = capsys.readouterr().out
    assert "already complete; nothing to resume" in out and "wrote" not in out


def test_output_that_is_the_config_is_refused(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", small_config())
    text = cfg.read_text()
    assert dynsim_main(["run", str(cfg), "-o", str(cfg), "--overwrite", "-q"]) == 2
    assert "is the config file itself" in capsys.readouterr().err
    assert cfg.read_text() == text


def test_empty_config_says_it_runs_the_defaults(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing set\n")
    import dynsim.experiment

    ran = []
    monkeypatch.setattr(dynsim.experiment.TimeSteppedKind, "run",
                        lambda self, config, path, **kw: ran.append(config) or _Done())
    assert dynsim_main(["run", str(empty), "-o", str(tmp_path / "e.h5")]) == 0
    assert "sets no keys: running every default of the simple kind" in capsys.readouterr().err
    assert ran == [parse_config("")]


class _Done:
    code, message, written = "completed", "done", True


def test_no_test_set_leaves_the_test_observables_out_of_the_defaults():
    assert {"loss_test", "accuracy_test"} & set(parse_config("[task]\nn_test = 0").observables) == set()
    assert "loss_test" in parse_config("[task]\nn_test = 5").observables


@pytest.mark.parametrize("args, fragment", [
    (["--window", "10", "1"], "0 <= T0 < T1"),
    (["--window", "nan", "10"], "both finite"),
    (["-o", "FILE"], "a file of that name exists"),
    (["-o", "FILE/sub"], "cannot create the report directory"),
])
def test_analysis_report_bad_arguments_are_one_line(interrupted, tmp_path, capsys, args, fragment):
    (tmp_path / "file").write_text("not a directory")
    args = [str(tmp_path / "file") + a[4:] if a.startswith("FILE") else a for a in args]
    assert analysis_main(["report", str(interrupted), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
    assert (tmp_path / "file").read_text() == "not a directory"


@pytest.mark.parametrize("command", [["config-keys"], ["info", "FILE"]])
def test_closed_output_pipe_is_not_a_traceback(interrupted, command):
    proc = subprocess.Popen([sys.executable, "-m", "dynsim.cli", *[str(interrupted) if a == "FILE" else a
                                                                  for a in command]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written, as with '| head -0'
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_disk_estimates_below_a_gibibyte_are_in_megabytes():
    from dynsim.store import format_bytes

    assert format_bytes(12_345_678) == "12.3 MB" and format_bytes(3 * 2**30) == "3.00 GiB"
    assert np.isclose(float(format_bytes(2**30 - 1).split()[0]), (2**30 - 1) / 1e6, rtol=1e-3)
