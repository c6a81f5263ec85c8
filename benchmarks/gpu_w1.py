"""Workload W1 on a GPU: the CUDA backend at 2^16 to 2^20 replicas, against the CPU backend.

W1 (DESIGN.md section 7): D = 8 inputs, N = 32 tanh hidden units, P = 32 samples, SGD batch 1,
eta = 0.05, 20,000 steps, float64 (data/configs/w1.toml), here with R = 2^16 ... 2^20 replicas.
For each R it reports replica-steps per second of

* the CUDA backend, observables off: one ``advance`` over all steps, parameters resident on the GPU;
* the CUDA backend, observables on: the run's record schedule (w1.toml: 6 log-spaced records of
  loss_train, loss_test, param_norm; ``--observables all`` adds the NTK and response), advancing
  between records and measuring at each, every record copied back to the host;
* the CPU backend (all cores) on the same R for ``--cpu-steps`` steps (its rate per replica-step
  does not depend on the number of steps), and the ratio GPU / CPU.

Before a GPU figure is printed, the GPU's final parameters of replicas 0..``--check-replicas``-1
must equal the CPU backend's after the same steps to 1e-9 relative (the criterion of w1.py: the GPU
rounds transcendentals and contracts multiply-adds differently, by about an ulp per operation).

    python benchmarks/gpu_w1.py [--log2-replicas 16,18,20] [--steps 20000] [--cpu-steps 500]

It needs an NVIDIA GPU with the numba-cuda package (pip install ".[cuda]") and refuses to run on
numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), whose timings say nothing about a GPU. Copy the
table into benchmarks/RESULTS.md with the GPU, driver and date.
"""
import argparse
import dataclasses
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from dynsim.kinds import load_config
from dynsim.simple_experiment import Simulation
from dynsim.engine.cuda import CudaBackend, cuda, simulator_active, unavailable_reason
from dynsim.engine.schedule import record_steps
from dynsim.observables import DEFAULT_OBSERVABLES, allocate

REPO = Path(__file__).resolve().parents[1]
AGREEMENT_RTOL = 1e-9


def _refusal() -> str:
    if simulator_active():
        return ("the CUDA simulator is active (NUMBA_ENABLE_CUDASIM=1): it runs kernels as Python threads "
                "and its timings say nothing about a GPU; unset NUMBA_ENABLE_CUDASIM on a machine with a GPU")
    return unavailable_reason()


def _rate(work, fn):
    t0 = time.perf_counter()
    fn()
    cuda.synchronize()
    return work / (time.perf_counter() - t0)


def bench(cfg, steps, cpu_steps, check_replicas, observables):
    sim = Simulation(cfg)
    gpu = CudaBackend()
    replicas = cfg.run.replicas
    args = (sim.data, sim.model_ints, sim.model_floats, sim.trainer_ints, sim.trainer_floats, cfg.run.seed)
    theta0 = sim.initial_params()
    status = np.zeros(replicas, dtype=np.int8)
    failed = np.full(replicas, -1, dtype=np.int64)

    # compile outside the timings
    warm = gpu.upload(theta0[:1])
    gpu.advance(warm, *args, 0, 1, status[:1], failed[:1])
    buffers = allocate(observables, replicas, sim.data.x_probe.shape[0], sim.data.x_source.shape[0])
    gpu.measure(gpu.upload(theta0[:1]), sim.data, sim.model_ints, sim.model_floats, sim.loss_code,
                cfg.training.eta, sim.class_threshold,
                allocate(observables, 1, sim.data.x_probe.shape[0], sim.data.x_source.shape[0]))

    params = gpu.upload(theta0)
    rate_off = _rate(replicas * steps, lambda: gpu.advance(params, *args, 0, steps, status, failed))
    final = gpu.download(params)
    if np.any(status != 0):
        sys.exit(f"gpu_w1: {np.count_nonzero(status)} replicas diverged on the GPU; not timing")

    params = gpu.upload(theta0)
    status[:] = 0

    def recorded_run():
        step = 0
        for target in record_steps(steps, cfg.record.n_records, cfg.record.spacing):
            if target > step:
                gpu.advance(params, *args, step, int(target), status, failed)
                step = int(target)
            gpu.measure(params, sim.data, sim.model_ints, sim.model_floats, sim.loss_code, cfg.training.eta,
                        sim.class_threshold, buffers)

    rate_on = _rate(replicas * steps, recorded_run)
    if not np.array_equal(gpu.download(params), final):
        sys.exit("gpu_w1: the recorded GPU run ended elsewhere than the unrecorded one; not reporting")

    # the CPU backend: agreement on the first replicas over all steps, then its rate on all replicas
    k = min(check_replicas, replicas)
    reference = theta0[:k].copy()
    sim.backend.advance(reference, *args, 0, steps, status[:k], failed[:k])
    err = float(np.max(np.abs(final[:k] - reference) / (np.abs(reference) + 1e-12)))
    if err > AGREEMENT_RTOL:
        sys.exit(f"gpu_w1: GPU and CPU disagree after {steps} steps (max rel. diff {err:.2e} > {AGREEMENT_RTOL}); "
                 "not reporting")
    on_cpu = theta0.copy()
    sim.backend.advance(on_cpu[:1].copy(), *args, 0, 1, status[:1], failed[:1])  # compile
    t0 = time.perf_counter()
    sim.backend.advance(on_cpu, *args, 0, cpu_steps, status, failed)
    rate_cpu = replicas * cpu_steps / (time.perf_counter() - t0)
    return rate_off, rate_on, rate_cpu, err


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--log2-replicas", default="16,18,20", help="comma-separated exponents: R = 2^k")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--cpu-steps", type=int, default=500, help="steps of the CPU backend's timing")
    ap.add_argument("--check-replicas", type=int, default=128, help="replicas compared with the CPU backend")
    ap.add_argument("--observables", default="w1", help="'w1' (the config's), 'all', or a comma-separated list")
    args = ap.parse_args()
    reason = _refusal()
    if reason:
        print(f"gpu_w1: refusing to run: {reason}", file=sys.stderr)
        return 2
    base = load_config(REPO / "data/configs/w1.toml")
    if args.observables == "w1":
        observables = tuple(base.record.observables)
    elif args.observables == "all":
        observables = DEFAULT_OBSERVABLES
    else:
        observables = tuple(args.observables.split(","))
    m = base.model
    print(f"GPU: {CudaBackend().device}; CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    print(f"W1: D={m.input_dim} N={m.width} P={base.task.n_train} SGD batch 1, eta={base.training.eta}, "
          f"steps={args.steps}; observables on = {', '.join(observables)} at {base.record.n_records} records")
    print("| replicas | GPU, obs. off (M replica-steps/s) | GPU, obs. on | CPU backend | GPU/CPU (off) "
          "| GPU/CPU (on) | max rel. diff vs CPU |")
    print("|---|---|---|---|---|---|---|")
    for k in (int(v) for v in args.log2_replicas.split(",")):
        cfg = dataclasses.replace(base, run=dataclasses.replace(base.run, replicas=2**k),
                                  record=dataclasses.replace(base.record, observables=observables))
        off, on, cpu_rate, err = bench(cfg, args.steps, args.cpu_steps, args.check_replicas, observables)
        print(f"| 2^{k} | {off / 1e6:.1f} | {on / 1e6:.1f} | {cpu_rate / 1e6:.2f} | {off / cpu_rate:.1f} "
              f"| {on / cpu_rate:.1f} | {err:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
