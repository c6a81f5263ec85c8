"""The default checkpoint cadence (issue 20, item 7): a kill loses at most 5 % of the run's steps or
10 s of wall time, whichever is less, and timed checkpoints never cost more than about 1 %."""
import math

import numpy as np

from dynsim import store
from dynsim.engine import CheckpointPolicy
from dynsim.simple_experiment import Simulation

from conftest import small_config


def test_default_checkpoints_fall_every_five_percent_of_the_steps(tmp_path, monkeypatch):
    seen = []
    original = store.RunWriter.checkpoint
    monkeypatch.setattr(store.RunWriter, "checkpoint",
                        lambda self, step, *a: (seen.append(step), original(self, step, *a))[1])
    cfg = small_config(run=dict(steps=1000), record=dict(n_records=4, block_records=100))
    sim = Simulation(cfg)
    # short chunks that do not divide the interval: 5 % of the steps is more than the chunks needed to
    # keep a checkpoint of these few parameters under 1 % of the compute
    sim.chunk_steps = 7
    sim.run(tmp_path / "c.h5", progress=False)
    every = math.ceil(1000 * CheckpointPolicy.RUN_FRACTION)
    assert set(range(0, 1001, every)) <= set(seen)  # the header's at 0, then every 50 steps, then the end
    assert np.max(np.diff(sorted(set(seen)))) <= every  # the most a kill can lose, in steps


def test_checkpoint_interval_widens_to_keep_the_cost_under_one_percent():
    small = CheckpointPolicy(steps=1000, seconds=10.0, chunk_steps=7, param_bytes=10_000)
    assert small.every == 50
    # a W1-sized run (20,000 steps in chunks of ~4,000): 5 % is 1,000 steps, less than the 4 chunks a
    # checkpoint of 2 ms + 361 kB / 200 MB/s = 3.8 ms needs at 0.1 s per chunk and a 1 % budget
    w1 = CheckpointPolicy(steps=20_000, seconds=10.0, chunk_steps=4069, param_bytes=128 * 353 * 8)
    assert w1.every == 4 * 4069 and w1.every < 20_000
    # 800 MB of parameters take ~4 s to write: 4,002 chunks between checkpoints by steps, more than 5 %
    big = CheckpointPolicy(steps=10**6, seconds=10.0, chunk_steps=30, param_bytes=8 * 10**8)
    assert big.every == math.ceil((2e-3 + 4.0) / 1e-3) * 30 > 50_000
    assert CheckpointPolicy(steps=1000, seconds=10.0, checkpoint_steps=300).every == 300


def test_timed_checkpoints_wait_for_their_cost_to_be_one_percent():
    policy = CheckpointPolicy(steps=10**9, seconds=10.0, checkpoint_steps=None, now=0.0)
    assert not policy.due_by_time(9.9) and policy.due_by_time(10.1)
    policy.done(started=10.1, ended=10.6)  # a checkpoint that took 0.5 s
    # 10 s later it is due by time, but 0.5 s is 5 % of 10 s: wait until 50 s have passed
    assert not policy.due_by_time(10.6 + 10.5) and not policy.due_by_time(10.6 + 49.9)
    assert policy.due_by_time(10.6 + 50.1)
    assert policy.next_step(0) == 5 * 10**7 and policy.next_step(5 * 10**7) == 10**8
    every_chunk = CheckpointPolicy(steps=100, seconds=0.0, now=0.0)
    every_chunk.done(started=0.0, ended=5.0)
    assert every_chunk.due_by_time(5.0)  # checkpoint_seconds = 0 asks for every chunk, whatever it costs


def test_fewer_records_than_asked_are_explained_when_they_happen(tmp_path):
    """Log-spaced record steps that coincide are recorded once; the run's message says so."""
    cfg = small_config(run=dict(steps=300), record=dict(n_records=40, spacing="log"))
    result = Simulation(cfg).run(tmp_path / "r.h5", progress=False)
    with store.RunReader(tmp_path / "r.h5") as rd:
        n = rd.n_records
    assert n < 40 and f"{n} records (record.n_records = 40: log-spaced record steps" in result.message
