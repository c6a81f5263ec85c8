"""What the full depth x width grid of issue 21, item 3 costs on this machine: wall time of single runs.

    python data/scripts/depth_width_cost.py [--out runs/depth_width_cost.json] [--tasks digits mnist1d]

For a few (depth, width) shapes per task, runs the base config of ``data/configs/depth_width_grid_{task}.toml``
(same observables, records and data) with 1 replica on 1 thread (what a worker of a 2-worker sweep gets on
2 cores) at two step counts, in one process after a warm-up run (a sweep's worker loads the compiled
kernels once, not once per point). The difference of the two times over the difference of the steps is
the cost of one replica-step; the rest is the cost of a run's fixed part (data, the 6 records with their
basins and mode allocations, the file). Times are the process's CPU time (``seconds``; the wall time of
a run on a core of its own, robust to the other work of a shared machine), with the wall time beside
them (``wall_seconds``). Writes the measured times to ``--out`` (JSON);
``depth_width_predictors.py`` fits the cost law to them and writes the cost table of the full grid into
its block.
"""
import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Spread over the parameter count (2e2 .. 2e6) and the depth (1 .. 100) at fixed count, so that a law in
# both can be fitted; the widest deep shapes are left out (their single run would take minutes).
SHAPES = ((1, 2), (1, 8), (1, 128), (1, 512), (2, 512), (4, 32), (4, 128), (4, 512), (8, 8), (16, 32),
          (32, 8), (32, 128), (64, 2), (100, 8))
FIRST_STEPS = 20
# each shape's second run adds roughly this many seconds of steps (from a rough rate of 3e9 FLOP/s
# single-threaded), so that the slope is resolved over the records' time for every shape
TARGET_SECONDS = 4.0


def base_tables(task: str) -> dict:
    return tomllib.loads((ROOT / "data" / "configs" / f"depth_width_grid_{task}.toml").read_text())["base"]


def shape_config(task: str, depth: int, width: int, steps: int, replicas: int = 1):
    from dynsim import kinds

    tables = base_tables(task)
    tables["run"].update(steps=steps, replicas=replicas)
    tables["model"].update(depth=depth, width=width)
    return kinds.config_from_mapping(tables)


def n_params(task: str, depth: int, width: int) -> int:
    return int(shape_config(task, depth, width, 1).resolved().architecture.n_params)


def _seconds(config) -> float:
    from dynsim.kinds import make_runner

    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time(), time.perf_counter()
        result = make_runner(config).run(Path(tmp) / "run.h5", progress=False)
        elapsed = time.process_time() - start[0], time.perf_counter() - start[1]
    if not result.ok:
        raise RuntimeError(f"timing run failed: {result.message}")
    return elapsed


def measure(task: str, shapes=SHAPES) -> list[dict]:
    batch = base_tables(task)["training"]["batch_size"]
    _seconds(shape_config(task, 1, 8, 5))  # warm-up: loads the kernels and the data set
    rows = []
    for depth, width in shapes:
        p = n_params(task, depth, width)
        extra = int(min(4000, max(100, TARGET_SECONDS * 3e9 / (6 * batch * p))))
        cpu, wall = zip(*[_seconds(shape_config(task, depth, width, steps))
                          for steps in (FIRST_STEPS, FIRST_STEPS + extra)])
        rows.append(dict(task=task, depth=depth, width=width, n_params=p, steps=[FIRST_STEPS, FIRST_STEPS + extra],
                         seconds=list(cpu), wall_seconds=list(wall)))
        print(f"{task} depth {depth} width {width}: {p} parameters, {cpu[0]:.2f} s CPU ({wall[0]:.2f} s wall) at "
              f"{FIRST_STEPS} steps, {cpu[1]:.2f} s ({wall[1]:.2f} s) at {FIRST_STEPS + extra}", file=sys.stderr)
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "depth_width_cost.json"))
    parser.add_argument("--tasks", nargs="+", default=["digits", "mnist1d"])
    args = parser.parse_args(argv)
    if os.environ.get("NUMBA_NUM_THREADS") != "1":  # must be set before numba is imported: rerun so
        os.environ["NUMBA_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])])
    load_before = os.getloadavg()[0]
    rows = [row for task in args.tasks for row in measure(task)]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        machine=f"{_cpu_name()}, {os.cpu_count()} cores", threads=1,
        load_average=[load_before, os.getloadavg()[0]], rows=rows), indent=1))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
