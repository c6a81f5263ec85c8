"""``analysis report`` end to end: figures and numbers from real run files, several files, a file
still being written, and clear errors for bad input."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.fits import fit_power_law
from analysis import quantities as q
from analysis.report import write_report
from dynsim.simple_experiment import Simulation
from dynsim.store import RunReader

from conftest import small_config

OBS = ("loss_train", "loss_test", "ntk", "response", "effective_rank", "participation_ratio", "feature_spectrum",
       "input_grad_norm", "flip_distance")


def _cfg(method, **training):
    return small_config(task=dict(kind="encoding", n_train=16, n_test=16, n_probes=8, n_sources=2),
                        model=dict(input_dim=1, width=8, activation="tanh", bias_std=1.0),
                        run=dict(steps=3000, replicas=6),
                        training=dict(method=method, eta=0.05, **training),
                        record=dict(n_records=25, observables=OBS, two_time_waits=4, two_time_lags=6))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    paths = []
    for method, extra in (("sgd", dict(batch_size=1)), ("gd", dict(batch_size=None))):
        path = tmp / f"{method}.h5"
        assert Simulation(_cfg(method, **extra)).run(path, progress=False).ok
        paths.append(path)
    return paths


def test_report_writes_figures_and_the_numbers_it_fitted(runs, tmp_path):
    md = write_report(runs, tmp_path / "out", window=(1.0, 150.0))
    text = md.read_text()
    for stem in ("sgd", "gd"):
        for fig in ("loss", "response", "kernel", "features", "fragility", "autocorrelation", "msd"):
            png = tmp_path / "out" / f"{stem}_{fig}.png"
            assert png.exists() and png.stat().st_size > 5000, png
            assert f"({png.name})" in text
    assert (tmp_path / "out" / "compare_features.png").exists()
    # the exponent in the report is the one the fit gives on the same data and window
    with RunReader(runs[0]) as rd:
        t, amp = q.response_amplitude(rd)
    fit = fit_power_law(t, amp.T, window=(1.0, 150.0))
    assert f"alpha = {fit.exponent:.3f}" in text
    assert "collapse against tau / t_w^mu" in text


def test_report_cli_and_bad_files_are_clear(runs, tmp_path):
    """The console script writes the report; ``python -m analysis`` (same entry point) refuses bad files
    in one line with exit code 2."""
    script = Path(sys.executable).with_name("analysis")
    proc = subprocess.run([str(script), "report", str(runs[0]), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "report.md").exists() and "wrote" in proc.stdout
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(bad), "-o", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("analysis: error:") and "bad.h5" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "analysis", "report", str(tmp_path / "missing.h5")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_report_on_a_file_still_being_written(tmp_path):
    """Interrupted mid-run (the state a live run's file is in between commits): the report covers the
    committed records only."""
    from test_reliability import _InterruptAfter

    sim = Simulation(_cfg("sgd", batch_size=1))
    sim.chunk_steps = 50
    sim.advance = _InterruptAfter(sim, 20)
    path = tmp_path / "partial.h5"
    assert sim.run(path, progress=False).code == "interrupted"
    with RunReader(path) as rd:
        n = rd.n_records
        last = rd.steps[-1]
        C = rd.two_time("autocorrelation")
    assert 0 < last < 3000
    assert np.isnan(C).any() and np.isfinite(C).any()  # two-time pairs beyond the cut are not there yet
    md = write_report([path], tmp_path / "out")
    assert f"{n} records to step {last}" in md.read_text()
