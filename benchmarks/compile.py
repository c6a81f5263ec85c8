"""Where the cold compile time goes: every shipped config, each in a fresh process with an empty cache.

For each config under ``data/configs`` (or those named), a subprocess with ``NUMBA_CACHE_DIR`` set
to an empty folder (a fresh install) runs it through the CLI until its first step: the driver stops
the run when the first chunk of steps has been advanced (the progress bar's first update; the
record at step 0 and every kernel compile come before it). Chain configs, which have no time loop,
run their first block of chains. ``PYTHONPATH=OTHER_CHECKOUT python benchmarks/compile.py``
measures another checkout (the subprocesses inherit the path), for before/after comparisons.
Numba's ``numba:compile`` events give the seconds spent compiling each function (exclusive of the
functions it called, which are listed on their own). The quickstart is also run whole, as the
README's command does, and timed from process start to exit.

    python benchmarks/compile.py [--configs quickstart,deep_digits] [--repeats 3] [--kernels 8]

Prints a markdown table (median over repeats of the seconds to the first step, the import time,
the compile time, and the slowest kernels of one repeat).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in the subprocess: time to the first step of one config, and compile seconds per function.
_DRIVER = r"""
import json, sys, time
start = time.perf_counter()
from collections import defaultdict
import numba.core.event as event
stack, exclusive = [], defaultdict(float)

class Timer(event.Listener):
    def on_start(self, ev):
        fn = ev.data["dispatcher"].py_func
        stack.append([f"{fn.__module__}.{fn.__qualname__}", time.perf_counter(), 0.0])

    def on_end(self, ev):
        name, t0, children = stack.pop()
        spent = time.perf_counter() - t0
        exclusive[name] += spent - children
        if stack:
            stack[-1][2] += spent

event.register("numba:compile", Timer())
import dynsim.chain_experiment as chain
import dynsim.engine as engine
imported = time.perf_counter()

class FirstStep(Exception):
    pass

class Bar:
    def update(self, n):
        raise FirstStep  # the first chunk of steps is done

    def close(self):
        pass

engine._progress_bar = lambda *args, **kwargs: Bar()
build = chain._build

def first_block(config, inputs, writer, progress):
    import dataclasses
    small = dataclasses.replace(config, run=dataclasses.replace(config.run, replicas=config.block_replicas))
    build(small, inputs, writer, progress)
    raise FirstStep
chain._build = first_block
from dynsim.cli import main
try:
    main(["run", sys.argv[1], "-o", sys.argv[2], "--overwrite", "-q"])
except FirstStep:
    pass
done = time.perf_counter()
print(json.dumps(dict(first_step=done - start, imports=imported - start, compile=sum(exclusive.values()),
                      kernels=sorted(exclusive.items(), key=lambda kv: -kv[1]))))
"""


def _cold_env(folder):
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = str(folder)
    env.setdefault("PYTHONSAFEPATH", "1")
    return env


def first_step(config: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="dynsim-compile-bench-") as folder:
        proc = subprocess.run([sys.executable, "-c", _DRIVER, str(config), str(Path(folder) / "run.h5")],
                              capture_output=True, text=True, env=_cold_env(Path(folder) / "cache"), cwd=folder)
    if proc.returncode != 0:
        raise SystemExit(f"{config.name}: the driver failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def whole_quickstart() -> float:
    """``dynsim run data/configs/quickstart.toml`` with an empty cache, from process start to exit."""
    with tempfile.TemporaryDirectory(prefix="dynsim-compile-bench-") as folder:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dynsim.cli", "run", str(REPO / "data/configs/quickstart.toml"), "-o",
                        str(Path(folder) / "q.h5"), "-q"], check=True, env=_cold_env(Path(folder) / "cache"),
                       cwd=folder)
        return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", help="comma-separated config names under data/configs (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kernels", type=int, default=6, help="slowest kernels listed per config")
    args = ap.parse_args()
    names = args.configs.split(",") if args.configs else sorted(p.stem for p in (REPO / "data/configs").glob("*.toml"))
    configs = [REPO / "data/configs" / f"{name}.toml" for name in names]
    configs = [c for c in configs if "axes" not in tomllib.loads(c.read_text())]  # sweep files run many configs
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, "
          f"cold Numba cache per process, medians of {args.repeats}\n")
    quick = [whole_quickstart() for _ in range(args.repeats)]
    print(f"whole `dynsim run data/configs/quickstart.toml`, cold: median {statistics.median(quick):.1f} s "
          f"({', '.join(f'{q:.1f}' for q in quick)})\n")
    print("| config | to first step (s) | imports (s) | compiling (s) | slowest kernels (s, one repeat) |")
    print("|---|---|---|---|---|")
    for config in configs:
        runs = [first_step(config) for _ in range(args.repeats)]
        med = {key: statistics.median(r[key] for r in runs) for key in ("first_step", "imports", "compile")}
        slow = ", ".join(f"{name.rsplit('.', 1)[-1]} {s:.1f}" for name, s in runs[0]["kernels"][:args.kernels])
        print(f"| {config.stem} | {med['first_step']:.1f} | {med['imports']:.1f} | {med['compile']:.1f} | {slow} |",
              flush=True)


if __name__ == "__main__":
    main()
