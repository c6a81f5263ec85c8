"""Diverged runs stay analysable (issue 20, item 3): a replica's records are NaN, never inf, from its
divergence on; ``analysis report`` analyses the replicas that stayed finite and says how many it
left out."""
import numpy as np
import pytest

from analysis.report import write_report
from dynsim.kinds import parse_config
from dynsim.simple_experiment import Simulation
from dynsim.store import RunReader

# SGD at a learning rate where some replicas of a tiny teacher task blow up and others converge
FREEZE = """
[run]
seed = 3
replicas = 8
steps = 3000
on_divergence = "{mode}"
[model]
input_dim = 1
width = 8
[task]
kind = "teacher"
n_train = 8
[training]
method = "sgd"
batch_size = 1
eta = 0.7
[record]
n_records = 30
"""


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    path = tmp_path_factory.mktemp("freeze") / "freeze.h5"
    result = Simulation(parse_config(FREEZE.format(mode="freeze"))).run(path, progress=False)
    assert result.code == "diverged"
    return path


def test_diverged_replicas_are_nan_from_their_divergence_on(frozen):
    with RunReader(frozen) as rd:
        failed = rd.dataset("status/replica_failed_step")
        steps = rd.steps
        records = {name: rd.observable(name) for name in rd.observable_names}
    bad = failed >= 0
    assert 0 < bad.sum() < len(failed)  # a mixed ensemble, the case freeze exists for
    for name, values in records.items():
        assert not np.isinf(values).any(), name
        per_replica = values.reshape(values.shape[0], values.shape[1], -1)
        for r in np.flatnonzero(bad):
            after = steps > failed[r]
            assert np.isnan(per_replica[after, r]).all(), (name, r)
        if name.startswith("loss"):
            assert np.isfinite(per_replica[:, ~bad]).all(), name


def test_report_analyses_the_finite_replicas_and_counts_the_others(frozen, tmp_path):
    with RunReader(frozen) as rd:
        failed = rd.dataset("status/replica_failed_step")
        loss = rd.observable("loss_train")
    n_bad, n = int((failed >= 0).sum()), len(failed)
    text = write_report([str(frozen)], tmp_path / "report").read_text()
    assert f"- {n_bad} of {n} replicas diverged" in text
    assert f"({n_bad} of {n} replicas left out: not finite over the window)" in text
    assert f"{n - n_bad} replicas, t in" in text  # the response fit is over the finite ones
    assert f"final training loss: mean {np.mean(loss[-1, failed < 0]):.4g}" in text


def test_every_replica_frozen_says_so(tmp_path):
    """Freeze mode with every replica diverged: the message must not claim that others completed."""
    cfg = parse_config(FREEZE.format(mode="freeze").replace("eta = 0.7", "eta = 5.0"))
    result = Simulation(cfg).run(tmp_path / "all.h5", progress=False)
    assert result.code == "diverged" and len(result.failed_replicas) == cfg.run.replicas
    assert "every replica (8) frozen" in result.message and "others completed" not in result.message
