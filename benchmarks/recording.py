"""What records and memory cost on workload W1 (issue 7's two side targets).

1. Recording overhead: a whole ``Simulation.run`` of ``data/configs/w1.toml`` (records, HDF5
   writes, checkpoints, the final file) against the bare compiled ``advance`` over the same steps,
   for three record plans: the config's own (6 log-spaced records of the loss and |theta|), 40
   log-spaced records of the same, and 40 records of every default observable (NTK and response
   on the probes included). Overhead = run / advance - 1, medians of ``--repeats`` runs, all in one
   process with kernels compiled beforehand.
2. Memory: peak resident memory (``ru_maxrss``) of a fresh process that builds W1 with R replicas
   and runs 10 steps with 2 records, for each R in ``--replicas``; the slope over R is the cost of
   one replica.

    python benchmarks/recording.py [--repeats 3] [--replicas 1000,100000,1000000]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
W1 = REPO / "data" / "configs" / "w1.toml"


def _config(**record):
    from dynsim.config import config_from_mapping

    data = tomllib.loads(W1.read_text())
    data["record"].update(record)
    if "observables" in record and record["observables"] is None:
        del data["record"]["observables"]
    return config_from_mapping(data)


def recording_overhead(repeats):
    from dynsim.engine import Simulation

    plans = {"w1.toml as shipped (6 records: loss_train, loss_test, param_norm)": {},
             "40 records, same observables": {"n_records": 40},
             "40 records, every default observable (ntk, response on 4 probes)": {"n_records": 40, "observables": None}}
    with tempfile.TemporaryDirectory() as tmp:
        bare = Simulation(_config())
        replicas, steps = bare.config.run.replicas, bare.config.run.steps

        def advance_only():
            params = bare.initial_params()
            status = np.zeros(replicas, dtype=np.int8)
            failed = np.full(replicas, -1, dtype=np.int64)
            bare.advance(params, 0, steps, status, failed)

        advance_only()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            advance_only()
            times.append(time.perf_counter() - t0)
        t_advance = float(np.median(times))
        print(f"bare advance, {replicas} x {steps} steps: {t_advance:.3f} s "
              f"({replicas * steps / t_advance / 1e6:.2f} M replica-steps/s)")
        print("| record plan | records | run (s) | overhead |\n|---|---|---|---|")
        for label, record in plans.items():
            sim = Simulation(_config(**record))
            path = Path(tmp) / "w1.h5"
            sim.run(path, overwrite=True)  # compiles the observable kernels
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                sim.run(path, overwrite=True)
                times.append(time.perf_counter() - t0)
            t_run = float(np.median(times))
            print(f"| {label} | {len(sim.record_steps)} | {t_run:.3f} | {100 * (t_run / t_advance - 1):+.1f} % |")


_MEMORY_CHILD = """
import resource, sys, tempfile, tomllib
from pathlib import Path
from dynsim.config import config_from_mapping
from dynsim.engine import Simulation
data = tomllib.loads(Path(sys.argv[1]).read_text())
data["run"].update(replicas=int(sys.argv[2]), steps=10)
data["record"].update(n_records=2, observables=["loss_train", "param_norm"])
with tempfile.TemporaryDirectory() as tmp:
    Simulation(config_from_mapping(data)).run(Path(tmp) / "m.h5")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def memory(replica_counts):
    print("| replicas | peak RSS (MB) |\n|---|---|")
    rss = []
    for r in replica_counts:
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(W1), str(r)], check=True,
                             capture_output=True, text=True, env=dict(os.environ, PYTHONSAFEPATH="1"))
        rss.append(int(out.stdout.split()[-1]))
        print(f"| {r:,} | {rss[-1] / 1e6:.0f} |")
    if len(rss) > 1:
        slope = (rss[-1] - rss[0]) / (replica_counts[-1] - replica_counts[0])
        print(f"slope: {slope:.0f} bytes per replica (one W1 parameter vector is 320 x 8 = 2,560 bytes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--replicas", default="1000,100000,1000000")
    ap.add_argument("--skip", choices=("memory", "recording"), default=None)
    args = ap.parse_args()
    if args.skip != "recording":
        recording_overhead(args.repeats)
    if args.skip != "memory":
        memory([int(r) for r in args.replicas.split(",")])


if __name__ == "__main__":
    main()
