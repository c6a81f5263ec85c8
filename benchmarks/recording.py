"""What records and memory cost on workload W1 (issue 7's two side targets).

1. Recording overhead: a whole ``Simulation.run`` of ``data/configs/w1.toml`` (records, HDF5
   writes, checkpoints, the final file), split into the time inside the compiled ``advance`` and
   everything else, for three record plans: the config's own (6 log-spaced records of the loss and
   |theta|), 40 log-spaced records of the same, and 40 records of every default observable (NTK
   and response on the probes included). Overhead = everything else / time in advance, from the
   median of ``--repeats`` runs, in one process with kernels compiled beforehand.
2. Memory: peak resident memory (``ru_maxrss``) of a fresh process that builds W1 with R replicas
   and runs 10 steps with 2 records (file, checkpoints and all), for each R in ``--replicas`` and
   each ``run.precision``; the slope over R is the cost of one replica.

    python benchmarks/recording.py [--repeats 3] [--replicas 1000,100000,1000000] [--precision float64,float32]
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
    from dynsim.kinds import config_from_mapping

    data = tomllib.loads(W1.read_text())
    data["record"].update(record)
    if "observables" in record and record["observables"] is None:
        del data["record"]["observables"]
    return config_from_mapping(data)


class _TimedAdvance:
    """Wraps ``Simulation.advance`` and adds up the time spent in it."""

    def __init__(self, sim):
        self.inner, self.seconds = sim.advance, 0.0

    def __call__(self, *args):
        t0 = time.perf_counter()
        self.inner(*args)
        self.seconds += time.perf_counter() - t0


def recording_overhead(repeats):
    from dynsim.simple_experiment import Simulation

    plans = {"w1.toml as shipped (loss_train, loss_test, param_norm)": {},
             "40 log-spaced records, same observables": {"n_records": 40},
             "40 log-spaced records, every default observable (ntk, response on 4 probes)":
                 {"n_records": 40, "observables": None}}
    print("| record plan | records | run (s) | in advance (s) | records, file, checkpoints (s) | overhead |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, record in plans.items():
            path = Path(tmp) / "w1.h5"
            Simulation(_config(**record)).run(path, overwrite=True)  # compile the observable kernels
            totals, inside = [], []
            for _ in range(repeats):
                sim = Simulation(_config(**record))
                timer = _TimedAdvance(sim)
                sim.advance = timer
                t0 = time.perf_counter()
                sim.run(path, overwrite=True)
                totals.append(time.perf_counter() - t0)
                inside.append(timer.seconds)
            i = int(np.argsort(totals)[len(totals) // 2])  # the median run, both figures from it
            rest = totals[i] - inside[i]
            print(f"| {label} | {len(sim.record_steps)} | {totals[i]:.3f} | {inside[i]:.3f} | {rest:.3f} | "
                  f"{100 * rest / inside[i]:.1f} % |")


_MEMORY_CHILD = """
import resource, sys, tempfile, tomllib
from pathlib import Path
from dynsim.kinds import config_from_mapping
from dynsim.simple_experiment import Simulation
data = tomllib.loads(Path(sys.argv[1]).read_text())
data["run"].update(replicas=int(sys.argv[2]), steps=10, precision=sys.argv[3])
data["record"].update(n_records=2, observables=["loss_train", "param_norm"])
with tempfile.TemporaryDirectory() as tmp:
    Simulation(config_from_mapping(data)).run(Path(tmp) / "m.h5")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def memory(replica_counts, precision):
    print(f"\n{precision}:\n\n| replicas | peak RSS (MB) |\n|---|---|")
    rss = []
    for r in replica_counts:
        out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, str(W1), str(r), precision], check=True,
                             capture_output=True, text=True, env=dict(os.environ, PYTHONSAFEPATH="1"))
        rss.append(int(out.stdout.split()[-1]))
        print(f"| {r:,} | {rss[-1] / 1e6:.0f} |")
    if len(rss) > 1:
        slope = (rss[-1] - rss[0]) / (replica_counts[-1] - replica_counts[0])
        size = 4 if precision == "float32" else 8
        print(f"slope: {slope:.0f} bytes per replica (one W1 parameter vector is 320 x {size} = {320 * size:,} bytes)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--replicas", default="1000,100000,1000000")
    ap.add_argument("--precision", default="float64,float32")
    ap.add_argument("--skip", choices=("memory", "recording"), default=None)
    args = ap.parse_args()
    if args.skip != "recording":
        recording_overhead(args.repeats)
    if args.skip != "memory":
        for precision in args.precision.split(","):
            memory([int(r) for r in args.replicas.split(",")], precision)


if __name__ == "__main__":
    main()
