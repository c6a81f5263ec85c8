"""Time to first result: the compile notice, kernels compiled before the progress bar starts,
``dynsim compile``, and the replica blocks the CPU kernels run on threads.

The subprocess tests point NUMBA_CACHE_DIR at an empty folder, the state of a fresh install: each
pays a cold compile of the kernels it uses (the chain's are the cheapest, ~5 s on 2 cores).
"""
import json
import os
import subprocess
import sys

import pytest

from dynsim.parallel import blocks, over_replicas

from conftest import run_cli, small_config, write_config

NOTICE = "dynsim: compiling kernels for this kind of run"

CHAIN_CONFIG = """
[run]
seed = 3
replicas = 4
[model]
kind = "maxnorm_chain"
width = 4
candidates = 6
depth = 2
[inputs]
source = "gaussian"
n_test = 2
"""

# A run in a fresh process that records every Numba compilation that starts after the progress
# bar was created: the bar's clock must start once everything the loop calls is compiled.
_COMPILES_AFTER_BAR = r"""
import json, sys
import numba.core.event as event
import dynsim.engine as engine
state = {"bar": False, "late": []}
class Late(event.Listener):
    def on_start(self, ev):
        if state["bar"]:
            state["late"].append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Late())
make_bar = engine._progress_bar
def bar(*args, **kwargs):
    state["bar"] = True
    return make_bar(*args, **kwargs)
engine._progress_bar = bar
from dynsim.cli import main
code = main(["run", sys.argv[1], "-o", sys.argv[2]])
print(json.dumps(dict(code=code, late=state["late"])))
"""


def _cold(tmp_path):
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    return {"NUMBA_CACHE_DIR": str(cache)}


def test_a_cold_run_says_it_compiles_once_and_compiles_nothing_after_the_bar_starts(tmp_path):
    env = _cold(tmp_path)
    cfg = write_config(tmp_path / "c.toml", small_config(record=dict(two_time_waits=2, two_time_lags=2)))
    proc = subprocess.run([sys.executable, "-c", _COMPILES_AFTER_BAR, str(cfg), str(tmp_path / "a.h5")],
                          capture_output=True, text=True, env={**os.environ, **env}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["code"] == 0
    assert result["late"] == []  # every kernel of the time loop was compiled before the bar started
    assert proc.stderr.count(NOTICE) == 1
    assert "(simple)" in proc.stderr
    # the same run again loads every kernel from the cache: no notice
    warm = run_cli("run", cfg, "-o", tmp_path / "b.h5", env=env, check=True)
    assert NOTICE not in warm.stderr


def test_quiet_mode_stays_quiet_while_compiling(tmp_path):
    (tmp_path / "q").mkdir()
    env = _cold(tmp_path / "q")
    cfg = tmp_path / "chain.toml"
    cfg.write_text(CHAIN_CONFIG)
    proc = run_cli("run", cfg, "-o", tmp_path / "c.h5", "-q", env=env, check=True)
    assert proc.stderr == "" and proc.stdout == ""


def test_dynsim_compile_fills_the_cache_so_the_first_run_compiles_nothing(tmp_path):
    env = _cold(tmp_path)
    proc = run_cli("compile", "--kind", "maxnorm_chain", env=env, check=True)
    assert "maxnorm_chain: kernels ready" in proc.stdout
    cfg = tmp_path / "chain.toml"
    cfg.write_text(CHAIN_CONFIG)
    run = run_cli("run", cfg, "-o", tmp_path / "c.h5", env=env, check=True)
    assert NOTICE not in run.stderr


@pytest.mark.parametrize("replicas, threads", [(7, 2), (2, 4), (1, 1), (128, 3), (5, 5)])
def test_blocks_cover_every_replica_once_in_near_equal_parts(replicas, threads):
    parts = blocks(replicas, threads)
    covered = [r for r0, r1 in parts for r in range(r0, r1)]
    assert covered == list(range(replicas))
    sizes = [r1 - r0 for r0, r1 in parts]
    assert len(parts) == min(replicas, threads) and max(sizes) - min(sizes) <= 1


def test_over_replicas_runs_every_block_and_raises_a_block_error(monkeypatch):
    import numpy as np

    monkeypatch.setattr("dynsim.parallel.thread_count", lambda: 3)
    seen = np.zeros(10, dtype=int)

    def kernel(r0, r1, out):
        out[r0:r1] += 1
    over_replicas(kernel, 10, seen)
    assert seen.tolist() == [1] * 10

    tail = np.zeros(10, dtype=int)
    over_replicas(kernel, 10, tail, start=4)  # the replicas 4..9 only, still cut into one block per thread
    assert tail.tolist() == [0] * 4 + [1] * 6

    def failing(r0, r1):
        if r0 > 0:
            raise ValueError(f"block {r0}")
    with pytest.raises(ValueError, match="block"):
        over_replicas(failing, 10)
