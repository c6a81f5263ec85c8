"""Workload W1 (DESIGN.md section 7), dynsim against the loop a researcher writes by hand.

W1: R = 128 replicas, D = 8 inputs, N = 32 tanh hidden units, P = 32 samples, SGD batch 1,
eta = 0.05, 20,000 steps, float64. Every implementation starts from dynsim's initial parameters
and uses dynsim's sample indices (drawn before timing), and must end with the same parameters
(to 1e-9 relative) before its time counts.

    python benchmarks/w1.py [--steps 20000] [--repeats 3]

Prints replica-steps per second (median of the repeats) and ratios; copy the table into
benchmarks/RESULTS.md with the machine and date.
"""
import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from dynsim import rng as R
from dynsim.config import load_config
from dynsim.engine import Simulation

REPO = Path(__file__).resolve().parents[1]


@njit(cache=True)
def _draw_indices(seed, replicas, steps, n_train):
    out = np.empty((steps, replicas), dtype=np.int64)
    for s in range(steps):
        for r in range(replicas):
            out[s, r] = R.index_at(seed, r, R.STREAM_BATCH, s, 0, n_train)
    return out


def numpy_w1(theta0, x, y, indices, eta, width, input_dim, scale):
    """Plain NumPy, vectorised over replicas: the loop one writes without a compiler."""
    r = theta0.shape[0]
    nw = width * input_dim
    W = theta0[:, :nw].reshape(r, width, input_dim).copy()
    b = theta0[:, nw:nw + width].copy()
    a = theta0[:, nw + width:nw + 2 * width].copy()
    for idx in indices:
        xb = x[idx]                                   # [R, D]
        h = np.tanh(np.einsum("rnd,rd->rn", W, xb) + b)
        dl = scale * np.sum(a * h, axis=1) - y[idx]   # squared loss: l' = f - y
        gz = (eta * scale) * dl[:, None] * a * (1.0 - h * h)
        a -= (eta * scale) * dl[:, None] * h
        W -= gz[:, :, None] * xb[:, None, :]
        b -= gz
    return np.concatenate([W.reshape(r, -1), b, a], axis=1)


def _median_rate(fn, work, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return work / np.median(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = load_config(REPO / "data/configs/w1.toml")
    sim = Simulation(cfg)
    m = cfg.model
    replicas, steps = cfg.run.replicas, args.steps
    work = replicas * steps
    theta0 = sim.initial_params()
    status = np.zeros(replicas, dtype=np.int8)
    failed = np.full(replicas, -1, dtype=np.int64)

    def dynsim_kernel():
        params = theta0.copy()
        sim.advance(params, 0, steps, status, failed)
        return params

    dynsim_kernel()  # compile (or load the cache) outside the timing
    rate_dynsim, final = _median_rate(dynsim_kernel, work, args.repeats)

    indices = _draw_indices(np.uint64(cfg.run.seed), replicas, steps, cfg.task.n_train)
    rate_numpy, final_np = _median_rate(
        lambda: numpy_w1(theta0, sim.data.x_train, sim.data.y_train, indices, cfg.training.eta, m.width,
                         m.input_dim, m.output_scale), work, max(1, args.repeats // 2))
    err = np.max(np.abs(final_np - final) / (np.abs(final) + 1e-12))
    if err > 1e-9:
        sys.exit(f"NumPy and dynsim disagree after {steps} steps (max rel. diff {err:.2e}); not timing")

    # the whole CLI run, records and HDF5 included
    out = Path("/tmp/dynsim_w1_bench.h5")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dynsim.cli", "run", str(REPO / "data/configs/w1.toml"), "-o", str(out),
                    "--quiet", "--overwrite"], check=True)
    cli_seconds = time.perf_counter() - t0

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    print(f"W1: R={replicas} D={m.input_dim} N={m.width} P={cfg.task.n_train} steps={steps}; "
          f"final parameters agree to {err:.1e} relative")
    print(f"| implementation | M replica-steps/s | ratio to NumPy |")
    print(f"|---|---|---|")
    print(f"| dynsim (advance kernel) | {rate_dynsim / 1e6:.2f} | {rate_dynsim / rate_numpy:.1f} |")
    print(f"| NumPy, vectorised over replicas | {rate_numpy / 1e6:.3f} | 1.0 |")
    print(f"dynsim run data/configs/w1.toml (20,000 steps, records, HDF5, process start): {cli_seconds:.2f} s wall")


if __name__ == "__main__":
    main()
