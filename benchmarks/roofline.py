"""Where the time of a lane-blocked step goes: the core's clock, cycles per replica-step on one thread by
activation, the tanh's own throughput, and LLVM's static model of the step's inner loops (issue 24).

1. Clock: a chain of dependent float64 additions timed by ``time.thread_time``; at the 3-cycle latency of
   an addition on AMD Zen 3 and Zen 4 (4 on recent Intel cores: pass ``--add-latency 4``) its time per
   addition gives the clock the core really runs at, which a VM's /proc/cpuinfo (the nominal clock) does
   not. Every cycle count below uses it (or ``--ghz``).
2. Per thread: the float64 kernel of each workload of ``w1.py`` timed by ``time.thread_time`` with
   ``NUMBA_NUM_THREADS=1`` (CPU time, so a neighbour on the other core moves it little), median of
   ``--repeats``, in cycles per replica-step. Run with tanh, relu and linear hidden units (every eta
   scaled by ``--eta-factor`` so that none diverges: a step costs the same at any eta, but a diverged
   replica leaves the lanes): tanh minus relu is the tanh's cost, relu everything else.
3. The tanh alone: ``fast_tanh_lanes`` over a long array (double-width vectors, as the kernels evaluate
   it), so that any number of independent values is in flight: cycles per value, the best this
   evaluation reaches on this core.
4. Static: the assembly of the W1 lane kernel (compiled afresh in a child process, since Numba does not
   show the assembly of cached code) cut into its loops; each loop with at least 8 vector floating-point
   operations and no such loop inside goes through ``llvm-mca`` (``--mcpu``, default znver3, the newest
   AMD model of LLVM 14; ``--mcpu-avx512`` where a loop uses AVX-512 forms it does not model), which
   gives its cycles per iteration and the resource that bounds it. Skipped without ``llvm-mca``.

    python benchmarks/roofline.py [--workloads w1,wide,fullbatch] [--repeats 7] [--ghz G] [--skip rates|static]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ACTIVATIONS = ("tanh", "relu", "linear")

_RATE_CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import w1
from dynsim.models.simple import SimpleNet
name, activation, repeats = sys.argv[2], sys.argv[3], int(sys.argv[4])
w1.SimpleNet = lambda **k: SimpleNet(**{**k, "activation": activation})
w = dict(w1.WORKLOADS[name], eta=w1.WORKLOADS[name]["eta"] * float(sys.argv[5]))
sim = w1.make_simulation(w)
theta0 = sim.initial_params()
status, failed = np.zeros(w1.REPLICAS, np.int8), np.full(w1.REPLICAS, -1, np.int64)
sim.advance(theta0.copy(), 0, w["steps"], status, failed)  # compile or load outside the timing
seconds = []
for _ in range(repeats):
    params = theta0.copy()
    t0 = time.thread_time()
    sim.advance(params, 0, w["steps"], status, failed)
    seconds.append(time.thread_time() - t0)
print(w1.REPLICAS * w["steps"] / np.median(seconds), int(np.any(status)))
"""

_ASM_CHILD = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import w1
from dynsim.engine import cpu
w = w1.WORKLOADS["w1"]
sim = w1.make_simulation(w)
status, failed = np.zeros(w1.REPLICAS, np.int8), np.full(w1.REPLICAS, -1, np.int64)
sim.advance(sim.initial_params(), 0, 10, status, failed)
kernel = cpu._advance_single_sample_lanes
sys.stdout.write(kernel.inspect_asm(kernel.signatures[0]))
"""


_CLOCK_CHILD = """
import time
from numba import njit

@njit
def chain(n, x, step):
    for _ in range(n):
        x = x + step  # each addition waits for the one before: one latency per iteration
    return x

n = 100_000_000
chain(10, 1.0, 1e-9)
seconds = []
for _ in range(5):
    t0 = time.thread_time()
    chain(n, 1.0, 1e-9)
    seconds.append(time.thread_time() - t0)
best = min(seconds)
print(n / best)
"""

_TANH_CHILD = """
import time
import numpy as np
from numba import njit
from dynsim import simd
from dynsim.models.activations import fast_tanh_lanes

@njit(error_model="numpy")
def tanh_pass(h, repeats):
    lanes = simd.lane_count(h)
    for _ in range(repeats):
        for k in range(0, h.shape[0], 2 * lanes):
            simd.store(h, k, fast_tanh_lanes(simd.load_wide(h, k)))

values = np.random.default_rng(0).uniform(-3.0, 3.0, 1024)
tanh_pass(values.copy(), 1)
seconds = []
for _ in range(5):
    h = values.copy()
    t0 = time.thread_time()
    tanh_pass(h, 4000)
    seconds.append(time.thread_time() - t0)
print(min(seconds) / (4000 * values.size))
"""


def _child(code: str, *args, **env) -> str:
    """The standard output of ``code`` run in a fresh one-thread Python process."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True,
                          env=dict(os.environ, NUMBA_NUM_THREADS="1", PYTHONSAFEPATH="1", **env)).stdout


def measured_ghz(add_latency):
    return add_latency * float(_child(_CLOCK_CHILD)) / 1e9


def tanh_alone(ghz):
    per_value = float(_child(_TANH_CHILD))
    print(f"\nfast_tanh_lanes alone (float64, 8 values per vector, 1,024 independent values): "
          f"{per_value * ghz * 1e9:.2f} cycles per value")


def thread_rates(workloads, repeats, ghz, eta_factor):
    print("| workload | activation | M replica-steps/s (one thread) | cycles per replica-step |")
    print("|---|---|---|---|")
    cycles = {}
    for name in workloads:
        for activation in ACTIVATIONS:
            out = _child(_RATE_CHILD, HERE, name, activation, repeats, eta_factor).split()
            rate, diverged = float(out[0]), out[1] == "1"
            cycles[name, activation] = ghz * 1e9 / rate
            note = " (diverged: not comparable)" if diverged else ""
            print(f"| {name} | {activation} | {rate / 1e6:.3f} | {cycles[name, activation]:.0f}{note} |")
    for name in workloads:
        tanh, relu = cycles[name, "tanh"], cycles[name, "relu"]
        print(f"{name}: the tanh {tanh - relu:.0f} cycles per replica-step, everything else {relu:.0f}")


def _vector_fp(body) -> int:
    return sum(bool(re.search(r"v(mul|add|sub|div)p[sd]", l)) for l in body)


def _hot_loops(asm: str):
    """(label, instructions) of every loop with >= 8 vector FP operations that holds no other such loop."""
    lines = asm.split("\n")
    labels = {m.group(1): i for i, l in enumerate(lines) if (m := re.match(r"^(\.LBB\S+):", l))}
    loops = []
    for i, line in enumerate(lines):
        m = re.match(r"\s+j\w+\s+(\.LBB\S+)", line)
        if m and labels.get(m.group(1), i) < i:
            body = [l for l in lines[labels[m.group(1)]:i + 1] if l.strip() and not l.strip().startswith((".", "#"))]
            if _vector_fp(body) >= 8:
                loops.append((labels[m.group(1)], i, m.group(1), body))
    for a, b, name, body in loops:
        if not any(a <= a2 and b2 <= b and (a2, b2) != (a, b) for a2, b2, _, _ in loops):
            yield name, body


def _mca(body, mcpu):
    return subprocess.run(["llvm-mca", f"-mcpu={mcpu}", "-iterations=200", "-instruction-info=false"],
                          input="\n".join(body) + "\n", capture_output=True, text=True)


def static_loops(mcpu, mcpu_avx512):
    if shutil.which("llvm-mca") is None:
        print("\nllvm-mca is not on PATH: the static part is skipped")
        return
    with tempfile.TemporaryDirectory() as cache:
        asm = _child(_ASM_CHILD, HERE, NUMBA_CACHE_DIR=cache)
    print(f"\nllvm-mca, the loops of the W1 lane kernel with >= 8 vector FP operations and no such loop inside "
          f"(-mcpu={mcpu}, or {mcpu_avx512} where the loop uses AVX-512 forms {mcpu} does not model):\n")
    print("| loop | vector mul / add+sub / div | memory reads / vector stores | model | cycles per iteration | "
          "bound by |")
    print("|---|---|---|---|---|---|")
    for name, body in _hot_loops(asm):
        count = lambda pattern: sum(bool(re.search(pattern, l)) for l in body)  # noqa: E731
        mul, add, div = count(r"vmulp[sd]"), count(r"v(add|sub)p[sd]"), count(r"vdivp[sd]")
        stores = count(r"vmov\w+\s+%[xyz]mm\d+, .*\(")
        reads = count(r"\(") - count(r"^\s*lea") - stores
        model, report = mcpu, _mca(body, mcpu)
        if report.returncode:
            model, report = mcpu_avx512, _mca(body, mcpu_avx512)
        if report.returncode:
            print(f"| {name} | {mul} / {add} / {div} | {reads} / {stores} | - | (llvm-mca failed) | |")
            continue
        total = int(re.search(r"Total Cycles:\s+(\d+)", report.stdout).group(1))
        print(f"| {name} | {mul} / {add} / {div} | {reads} / {stores} | {model} | {total / 200:.1f} | "
              f"{_busiest(report.stdout)} |")


def _busiest(report: str) -> str:
    """The resource of highest pressure per iteration in an llvm-mca report."""
    names = dict(re.findall(r"^\[([\d.]+)\]\s+- (\S+)", report, re.M))
    at = report.index("Resource pressure per iteration:")
    header, values = report[at:].split("\n")[1:3]
    pressure = {k: float(v) for k, v in zip(re.findall(r"\[([\d.]+)\]", header), values.split()) if v != "-"}
    top = max(pressure.values())
    return ", ".join(sorted({names[k] for k, v in pressure.items() if v == top})) + f" ({top:.1f})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="w1,wide,fullbatch")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--ghz", type=float, default=None, help="the core's clock (default: measured)")
    ap.add_argument("--add-latency", type=int, default=3, help="cycles of a float64 addition's latency")
    ap.add_argument("--eta-factor", type=float, default=0.1,
                    help="every workload's eta times this, so that no activation diverges (a step costs the same "
                         "at any eta, but a diverged replica leaves the lanes, which changes the cost)")
    ap.add_argument("--mcpu", default="znver3")
    ap.add_argument("--mcpu-avx512", default="icelake-server")
    ap.add_argument("--skip", choices=("rates", "static"), default=None)
    args = ap.parse_args()
    ghz = args.ghz
    if ghz is None:
        ghz = measured_ghz(args.add_latency)
        print(f"clock: {ghz:.2f} GHz (dependent float64 additions at {args.add_latency} cycles each)\n")
    if args.skip != "rates":
        thread_rates(args.workloads.split(","), args.repeats, ghz, args.eta_factor)
        tanh_alone(ghz)
    if args.skip != "static":
        static_loops(args.mcpu, args.mcpu_avx512)


if __name__ == "__main__":
    main()
