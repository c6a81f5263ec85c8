"""Sweeps on a real dask.distributed LocalCluster (worker processes): the merged file equals the
points run one by one, a killed worker loses nothing, reruns skip finished points, bad axes fail
before any task starts."""
import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest

from dynsim.kinds import stored_config
from dynsim.simple_experiment import Simulation
from dynsim.spec import ConfigError
from dynsim.store import RunReader
from dynsim.sweep import load_sweep, run_sweep, sweep_points

from conftest import assert_same_datasets, file_datasets, run_cli, small_config, write_config

pytest.importorskip("distributed")


def _write_sweep(tmp_path, axes_toml, steps=600, extra=""):
    write_config(tmp_path / "base.toml", small_config(run=dict(steps=steps, replicas=4),
                                                      record=dict(n_records=10)))
    path = tmp_path / "sweep.toml"
    path.write_text(f'base = "base.toml"\noutput = "out"\n{extra}\n[axes]\n{axes_toml}\n')
    return path


def _assert_point_equals_file(merged, group, reference):
    assert_same_datasets(file_datasets(merged, group=group), file_datasets(reference))


@pytest.fixture(scope="module")
def cluster_client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    client = Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_grid_sweep_merged_file_equals_points_run_one_by_one(tmp_path, cluster_client):
    path = _write_sweep(tmp_path, '"training.eta" = [0.02, 0.05]\n"training.batch_size" = [1, 3]\n"run.seed" = [1, 2]')
    sweep = load_sweep(path)
    assert len(sweep.points) == 8 and sweep.axes == ("training.eta", "training.batch_size", "run.seed")
    status = run_sweep(sweep, client=cluster_client, progress=False)
    assert all(s["code"] == "completed" for s in status.values()), status
    stored = sweep_points(sweep.merged_path)
    assert len(stored) == 8
    for (group, values), point in zip(stored, sweep.points):
        assert values == pytest.approx(point.values)
        reference = tmp_path / f"ref-{point.name}.h5"
        if point.index == 0:  # one of them through the command line, as a user would
            cfg = write_config(tmp_path / "p0.toml", point.config)
            run_cli("run", cfg, "-o", reference, "-q", check=True)
        else:
            assert Simulation(point.config).run(reference, progress=False).ok
        _assert_point_equals_file(sweep.merged_path, group, reference)
        with RunReader(sweep.merged_path, group=group) as rd:  # analysis reads points in place
            assert stored_config(rd).training.eta == values["training.eta"]
    info = run_cli("info", sweep.merged_path, check=True).stdout
    assert "8 points, 8 completed" in info and "training.batch_size" in info
    # a rerun skips every finished point
    again = run_sweep(sweep, client=cluster_client, progress=False)
    assert all("skipped" in s["message"] for s in again.values())


def test_killed_worker_point_is_retried_and_resumed_bit_identically(tmp_path, cluster_client):
    path = _write_sweep(tmp_path, '"run.seed" = [1, 2, 3, 4]', steps=40_000, extra="retries = 3")
    sweep = load_sweep(path)
    result = {}
    thread = threading.Thread(target=lambda: result.update(run_sweep(sweep, client=cluster_client, progress=False)))
    thread.start()
    # wait until a point's file has a committed checkpoint past step 0, then SIGKILL a worker process
    deadline = time.monotonic() + 120
    killed = False
    while time.monotonic() < deadline and not killed:
        for p in sweep.points:
            f = sweep.point_path(p)
            if not f.exists():
                continue
            try:
                with RunReader(f) as rd:
                    running = rd.status["code"] == "running" and rd.checkpoint["step"] > 0
            except Exception:  # noqa: BLE001 - the file may be mid-creation
                running = False
            if running:
                pids = cluster_client.run(os.getpid)
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    assert killed, "no point got under way within 120 s"
    thread.join(timeout=600)
    assert not thread.is_alive()
    assert all(s["code"] == "completed" for s in result.values()), result
    assert any("resumed" in s["message"] for s in result.values()), result
    for group, values in sweep_points(sweep.merged_path):
        point = sweep.points[int(group.split("/")[1])]
        reference = tmp_path / f"ref-{point.name}.h5"
        assert Simulation(point.config).run(reference, progress=False).ok
        _assert_point_equals_file(sweep.merged_path, group, reference)


def test_failing_point_is_retried_then_recorded_and_the_others_finish(tmp_path, cluster_client):
    """A point whose file is an interrupted run of a *different* config (left in the output directory
    by an earlier sweep) cannot be resumed: the task fails, is retried, is recorded as failed with
    the message, and the other point completes."""
    from test_reliability import _InterruptAfter

    path = _write_sweep(tmp_path, '"run.seed" = [1, 2]', extra="retries = 1")
    sweep = load_sweep(path)
    stale = sweep.point_path(sweep.points[1])
    stale.parent.mkdir(parents=True)
    sim = Simulation(small_config(run=dict(steps=600, replicas=4, seed=99)))
    sim.chunk_steps = 20
    sim.advance = _InterruptAfter(sim, 5)
    assert sim.run(stale, progress=False).code == "interrupted"
    status = run_sweep(sweep, client=cluster_client, progress=False)
    assert status[0]["code"] == "completed"
    assert status[1]["code"] == "failed" and "different config" in status[1]["message"]
    with h5py.File(sweep.merged_path, "r") as f:
        assert [s.decode() for s in f["sweep/status"][:]] == ["completed", "failed"]
        assert "points/0000" in f and "points/0001" not in f
    import json

    index = json.loads(sweep.index_path.read_text())
    assert [p["code"] for p in index["points"]] == ["completed", "failed"]


def test_a_diverged_point_is_a_result_that_a_rerun_keeps(tmp_path):
    """A point that diverged (under on_divergence = "freeze": its other replicas ran to the end) is
    finished: running the sweep again skips it, file untouched, since the same config diverges again at
    the same step; a diverged file of another config (a changed sweep) is run again."""
    import hashlib

    from dynsim.sweep import run_point
    from test_divergence import FREEZE

    text = FREEZE.format(mode="freeze")
    target = tmp_path / "points" / "0000.h5"
    first = run_point(text, str(target), 1)
    assert first["code"] == "diverged", first
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    again = run_point(text, str(target), 1)
    assert again == {"code": "diverged", "message": "already finished, diverged (skipped)"}
    assert hashlib.sha256(target.read_bytes()).hexdigest() == digest
    changed = text.replace("seed = 3", "seed = 4")
    other = run_point(changed, str(target), 1)
    assert "skipped" not in other["message"], other
    with RunReader(target) as rd:
        assert stored_config(rd).run.seed == 4


def test_sweep_cli_exits_3_when_points_diverged_and_the_rest_completed(tmp_path):
    """``dynsim sweep`` over two learning rates of a config run under "freeze": eta = 0.7 diverges
    (test_divergence's config), eta = 0.05 does not. Exit 3, as ``dynsim run`` gives for a diverged run,
    not the 1 of a failed point (which stopped the scripts that ran a sweep and then read its frozen
    points)."""
    from test_divergence import FREEZE

    (tmp_path / "base.toml").write_text(FREEZE.format(mode="freeze").replace("steps = 3000", "steps = 600"))
    path = tmp_path / "sweep.toml"
    path.write_text('base = "base.toml"\noutput = "out"\n[axes]\n"training.eta" = [0.7, 0.05]\n')
    proc = run_cli("sweep", path, "--workers", "1", "--quiet")
    assert proc.returncode == 3, proc.stderr
    assert "1/2 points completed" in proc.stderr and "point 0000 diverged" in proc.stderr
    with h5py.File(tmp_path / "out.h5", "r") as f:
        assert [code.decode() for code in f["sweep/status"][:]] == ["diverged", "completed"]


@pytest.mark.parametrize("axes,field,fragment", [
    ('"training.etaa" = [0.1]', "training.etaa", "unknown"),
    ('"training.eta" = []', "sweep.axes.training.eta", "non-empty list"),
    ('"training.eta" = ["fast"]', "training.eta", "point 0"),
    ('"training.eta" = [-1.0]', "training.eta", "point 0"),
    ('"eta" = [0.1]', "sweep.axes.eta", "section.key"),
])
def test_bad_axis_is_one_clear_error_before_any_task(tmp_path, axes, field, fragment):
    path = _write_sweep(tmp_path, axes)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert err.value.field == field and fragment in str(err.value), str(err.value)
    assert str(err.value).count("config field") == 1  # the field is named once, not once per layer
    proc = run_cli("sweep", path)
    assert proc.returncode == 2 and proc.stderr.startswith("dynsim: error:") and "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing started


def test_analysis_report_on_a_sweep_file_maps_the_fitted_exponent(tmp_path, cluster_client):
    from analysis.report import sweep_table, write_report
    from analysis.fits import fit_power_law
    from analysis import quantities as q

    path = _write_sweep(tmp_path, '"training.eta" = [0.03, 0.1]\n"training.batch_size" = [1, 4]', steps=3000)
    sweep = load_sweep(path)
    run_sweep(sweep, client=cluster_client, progress=False)
    axes, rows = sweep_table(sweep.merged_path, window=(1.0, 300.0))
    assert axes == ["training.eta", "training.batch_size"] and len(rows) == 4
    group, _ = sweep_points(sweep.merged_path)[3]
    with RunReader(sweep.merged_path, group=group) as rd:  # the table's exponent is the fit of that point
        t, amp = q.response_amplitude(rd)
    assert rows[3]["response_exponent"] == pytest.approx(fit_power_law(t, amp.T, window=(1.0, 300.0)).exponent)
    md = write_report([sweep.merged_path], tmp_path / "rep", window=(1.0, 300.0))
    assert (tmp_path / "rep" / "out_response_exponent_map.png").exists()
    assert "| training.eta | training.batch_size |" in md.read_text()


def test_shipped_sweep_config_validates():
    from pathlib import Path

    sweep = load_sweep(Path(__file__).resolve().parents[1] / "data" / "configs" / "sweep_lr_batch.toml")
    assert len(sweep.points) == 18
    assert {p.config.training.eta for p in sweep.points} == {0.02, 0.05, 0.1}
    assert sweep.merged_path.name == "lr_batch.h5"


def test_chain_sweep_over_seeds_and_depth_runs_merges_and_reads(tmp_path, cluster_client):
    """Any kind's base config sweeps: a maxnorm_chain over seeds x depth; each merged point equals the
    chain run alone, and the merged file goes through 'dynsim info' and 'analysis report'."""
    from dynsim.chain_experiment import ChainConfig
    from dynsim.kinds import config_from_mapping, run
    from dynsim.store import ChainReader

    base = config_from_mapping(dict(run=dict(replicas=3), model=dict(kind="maxnorm_chain", width=4, candidates=8,
                                                                     depth=2), inputs=dict(n_test=5)))
    write_config(tmp_path / "base.toml", base)
    path = tmp_path / "sweep.toml"
    path.write_text('base = "base.toml"\noutput = "out"\n[axes]\n"run.seed" = [1, 2]\n"model.depth" = [2, 3]\n')
    sweep = load_sweep(path)
    assert len(sweep.points) == 4 and all(isinstance(p.config, ChainConfig) for p in sweep.points)
    status = run_sweep(sweep, client=cluster_client, progress=False)
    assert all(s["code"] == "completed" for s in status.values()), status
    stored = sweep_points(sweep.merged_path)
    assert [values["model.depth"] for _, values in stored] == [2, 3, 2, 3]
    for (group, values), point in zip(stored, sweep.points):
        reference = tmp_path / f"ref-{point.name}.h5"
        assert run(point.config, reference, progress=False).ok
        merged_data, reference_data = file_datasets(sweep.merged_path, group=group), file_datasets(reference)
        for data, _ in (merged_data, reference_data):  # the status message says how long the build took
            data.pop("status/message")
        assert_same_datasets(merged_data, reference_data)
        with ChainReader(sweep.merged_path, group=group) as rd:
            assert rd.train_log_gain().shape == (values["model.depth"] + 1, 3)
    info = run_cli("info", sweep.merged_path, check=True).stdout
    assert "4 points, 4 completed" in info and "model.depth" in info
    # integer axes stay integers (seeds and depths, not 1.0 and 2.0)
    assert all(isinstance(v, np.integer) for _, values in stored for v in values.values())
    assert info.splitlines()[2].split() == ["0000", "1", "2", "completed"]
    from analysis.report import write_report

    text = write_report([str(sweep.merged_path)], tmp_path / "report").read_text()
    assert "4 completed points over run.seed, model.depth" in text
    for group, _ in stored:  # one chain section per point
        assert f"### point {group.rpartition('/')[2]}" in text


def test_response_law_sweep_over_seeds_and_kernels_runs_and_reports(tmp_path, cluster_client):
    """The response-law kind sweeps like any kind: seeds x kernels; each merged point equals the law run
    alone, and the merged file goes through 'dynsim info' and 'analysis report'."""
    from dynsim.kinds import config_from_mapping, run

    base = config_from_mapping(dict(run=dict(replicas=2, steps=50), model=dict(kind="response_law", width=4),
                                    task=dict(n_train=6, n_test=4, n_probes=5, n_sources=2),
                                    record=dict(n_records=4)))
    write_config(tmp_path / "base.toml", base)
    path = tmp_path / "sweep.toml"
    path.write_text('base = "base.toml"\noutput = "out"\n[axes]\n"run.seed" = [1, 2]\n'
                    '"model.kernel" = ["ntk_init", "arccos"]\n')
    sweep = load_sweep(path)
    status = run_sweep(sweep, client=cluster_client, progress=False)
    assert all(s["code"] == "completed" for s in status.values()), status
    stored = sweep_points(sweep.merged_path)
    for (group, values), point in zip(stored, sweep.points):
        reference = tmp_path / f"ref-{point.name}.h5"
        assert run(point.config, reference, progress=False).ok
        with RunReader(sweep.merged_path, group) as merged, RunReader(reference) as alone:
            assert merged.model_attrs["kernel"] == values["model.kernel"]
            np.testing.assert_array_equal(merged.observable("output"), alone.observable("output"))
    info = run_cli("info", sweep.merged_path, check=True).stdout
    assert "4 points, 4 completed" in info and "model.kernel" in info
    from analysis.report import write_report

    text = write_report([str(sweep.merged_path)], tmp_path / "report").read_text()
    assert "4 completed points over run.seed, model.kernel" in text
