"""dynsim against the training loop a researcher writes by hand (DESIGN.md section 7, issue 7).

Workloads (tanh simple network, squared loss, float64, identical data and initial parameters):

* ``w1``: R = 128 replicas, D = 8, N = 32, P = 32, SGD batch 1, eta = 0.05, 20,000 steps
* ``wide``: R = 128, D = 1, N = 1024, P = 32, SGD batch 1, eta = 0.05 / 32, 2,000 steps (the
  standard-scaling NTK grows with N, so eta shrinks to stay stable)
* ``fullbatch``: R = 128, D = 8, N = 32, P = 1024, full-batch GD, eta = 0.05, 200 steps

Implementations: dynsim's compiled kernel; NumPy vectorised over replicas; PyTorch batched over
replicas (``torch.no_grad``, hand-written gradients); JAX (``vmap`` over replicas of a ``lax.scan``
over steps, jitted; compile time reported apart). SGD sample indices are dynsim's Philox draws,
drawn before timing and handed to every implementation, so all follow the same trajectory; each
must end within 1e-9 of dynsim's parameters (max difference over max |parameter|) before its
time counts. dynsim's float32 option (``run.precision``) is timed too and must end within 1e-4 of
the float64 parameters. PyTorch and JAX are
optional (benchmark-only): ``pip install torch==2.13.0 jax jaxlib``.

    python benchmarks/w1.py [--workloads w1,wide,fullbatch] [--repeats 3]

Prints a markdown table of replica-steps per second (median of the repeats) and ratios.
"""
import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
from numba import njit

from dynsim import rng as R
from dynsim.config import Config, RecordSpec, RunSpec
from dynsim.simple_experiment import Simulation
from dynsim.integrators import TrainerSpec
from dynsim.models.simple import SimpleNet
from dynsim.tasks import TaskSpec

REPO = Path(__file__).resolve().parents[1]

WORKLOADS = {
    "w1": dict(input_dim=8, width=32, n_train=32, method="sgd", steps=20000, eta=0.05),
    "wide": dict(input_dim=1, width=1024, n_train=32, method="sgd", steps=2000, eta=0.05 / 32),
    "fullbatch": dict(input_dim=8, width=32, n_train=1024, method="gd", steps=200, eta=0.05),
}
REPLICAS = 128
# float32 parameters end within this fraction of the parameter scale of the float64 run
# (float32 rounding, 6e-8 per operation, accumulated over the run; W1 measured 1.5e-5)
FLOAT32_AGREEMENT = 1e-4
ETA = 0.05  # set per workload by bench()


def make_simulation(w, precision="float64") -> Simulation:
    training = TrainerSpec(method=w["method"], eta=w["eta"], batch_size=1 if w["method"] == "sgd" else None)
    return Simulation(Config(run=RunSpec(seed=1, replicas=REPLICAS, steps=w["steps"], precision=precision),
                             model=SimpleNet(input_dim=w["input_dim"], width=w["width"], activation="tanh"),
                             task=TaskSpec(kind="teacher", n_train=w["n_train"], n_test=8, n_probes=2, n_sources=1),
                             training=training, record=RecordSpec(n_records=2)))


@njit(cache=True)
def _draw_indices(seed, replicas, steps, n_train):
    out = np.empty((steps, replicas), dtype=np.int64)
    for s in range(steps):
        for r in range(replicas):
            out[s, r] = R.index_at(seed, r, R.STREAM_BATCH, s, 0, n_train)
    return out


def _split(theta, d, n):
    """W [R, D, N] (the stored, transposed layout), b [R, N], a [R, N]."""
    r = theta.shape[0]
    return theta[:, :d * n].reshape(r, d, n).copy(), theta[:, d * n:d * n + n].copy(), theta[:, d * n + n:].copy()


def _join(W, b, a):
    return np.concatenate([np.asarray(W).reshape(W.shape[0], -1), np.asarray(b), np.asarray(a)], axis=1)


# --- NumPy -------------------------------------------------------------------------------------
def numpy_sgd(theta0, x, y, indices, d, n):
    W, b, a = _split(theta0, d, n)
    for idx in indices:
        xb = x[idx]                                          # [R, D]
        h = np.tanh(np.einsum("rd,rdn->rn", xb, W) + b)
        dl = np.sum(a * h, axis=1) - y[idx]                  # squared loss: l' = f - y
        gz = ETA * dl[:, None] * a * (1.0 - h * h)
        a -= ETA * dl[:, None] * h
        W -= xb[:, :, None] * gz[:, None, :]
        b -= gz
    return _join(W, b, a)


def numpy_gd(theta0, x, y, steps, d, n):
    W, b, a = _split(theta0, d, n)
    p = x.shape[0]
    for _ in range(steps):
        h = np.tanh(np.einsum("pd,rdn->rpn", x, W) + b[:, None, :])
        dl = (np.einsum("rpn,rn->rp", h, a) - y) / p
        gz = dl[:, :, None] * a[:, None, :] * (1.0 - h * h)
        a -= ETA * np.einsum("rp,rpn->rn", dl, h)
        W -= ETA * np.einsum("pd,rpn->rdn", x, gz)
        b -= ETA * gz.sum(axis=1)
    return _join(W, b, a)


# --- PyTorch -----------------------------------------------------------------------------------
def torch_impl(theta0, x, y, indices, steps, d, n, full_batch):
    import torch

    torch.set_num_threads(os.cpu_count())
    W, b, a = (torch.from_numpy(v) for v in _split(theta0, d, n))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    p = x.shape[0]
    # matmul/bmm forms: torch.einsum on these small shapes is about 20 times slower
    with torch.no_grad():
        if full_batch:
            for _ in range(steps):
                h = torch.tanh(torch.matmul(xt, W) + b[:, None, :])              # [R, P, N]
                dl = ((h * a[:, None, :]).sum(dim=2) - yt) / p                     # [R, P]
                gz = dl[:, :, None] * a[:, None, :] * (1.0 - h * h)
                a -= ETA * torch.bmm(dl[:, None, :], h).squeeze(1)
                W -= ETA * torch.matmul(xt.T, gz)
                b -= ETA * gz.sum(dim=1)
        else:
            for idx in torch.from_numpy(indices):
                xb = xt[idx]
                h = torch.tanh(torch.bmm(xb[:, None, :], W).squeeze(1) + b)
                dl = (a * h).sum(dim=1) - yt[idx]
                gz = ETA * dl[:, None] * a * (1.0 - h * h)
                a -= ETA * dl[:, None] * h
                W -= xb[:, :, None] * gz[:, None, :]
                b -= gz
    return _join(W.numpy(), b.numpy(), a.numpy())


# --- JAX ---------------------------------------------------------------------------------------
def jax_impl(theta0, x, y, indices, steps, d, n, full_batch):
    """Returns (parameters, compile seconds) ; the function is jitted, compiled, then run."""
    import jax
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    p = x.shape[0]

    def sgd_step(params, idx):
        W, b, a = params
        xb = xj[idx]
        h = jnp.tanh(xb @ W + b)
        dl = a @ h - yj[idx]
        gz = ETA * dl * a * (1.0 - h * h)
        return (W - jnp.outer(xb, gz), b - gz, a - ETA * dl * h), None

    def gd_step(params, _):
        W, b, a = params
        h = jnp.tanh(xj @ W + b)
        dl = (h @ a - yj) / p
        gz = dl[:, None] * a * (1.0 - h * h)
        return (W - ETA * xj.T @ gz, b - ETA * gz.sum(0), a - ETA * dl @ h), None

    def one_replica(params, seq):
        return jax.lax.scan(gd_step if full_batch else sgd_step, params, seq)[0]

    seq = jnp.zeros((steps, theta0.shape[0]), dtype=jnp.int64) if full_batch else jnp.asarray(indices)
    run = jax.jit(jax.vmap(one_replica, in_axes=((0, 0, 0), 1)))
    params = tuple(jnp.asarray(v) for v in _split(theta0, d, n))
    t0 = time.perf_counter()
    compiled = run.lower(params, seq).compile()
    compile_seconds = time.perf_counter() - t0
    return (lambda: _join(*(np.asarray(v) for v in jax.block_until_ready(compiled(params, seq))))), compile_seconds


def _median_rate(fn, work, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return work / float(np.median(times)), out


def bench(name, repeats):
    global ETA
    w = WORKLOADS[name]
    ETA = w["eta"]
    sim = make_simulation(w)
    d, n, steps = w["input_dim"], w["width"], w["steps"]
    full = w["method"] == "gd"
    theta0 = sim.initial_params()
    x, y = sim.data.x_train, sim.data.y_train
    work = REPLICAS * steps
    status = np.zeros(REPLICAS, dtype=np.int8)
    failed = np.full(REPLICAS, -1, dtype=np.int64)

    def dynsim_kernel():
        params = theta0.copy()
        sim.advance(params, 0, steps, status, failed)
        return params

    dynsim_kernel()  # compile or load the cache outside the timing
    if np.any(status):
        raise SystemExit(f"workload {name} diverged in dynsim; its rate would be meaningless")
    rows = {}
    rows["dynsim"], reference = _median_rate(dynsim_kernel, work, repeats)
    notes = []

    # the float32 option (run.precision): same draws, float32 parameters and arithmetic
    sim32 = make_simulation(w, "float32")
    theta0_32 = sim32.initial_params()

    def dynsim_float32():
        params = theta0_32.copy()
        sim32.advance(params, 0, steps, status, failed)
        return params

    dynsim_float32()
    rate32, out32 = _median_rate(dynsim_float32, work, repeats)
    err32 = float(np.max(np.abs(out32 - reference)) / np.max(np.abs(reference)))
    if err32 <= FLOAT32_AGREEMENT:
        rows["dynsim float32"] = rate32
        notes.append(f"dynsim float32 agrees with float64 to {err32:.1e}")
    else:
        notes.append(f"dynsim float32 DISAGREES with float64 ({err32:.1e}); not reported")
    indices = None if full else _draw_indices(np.uint64(1), REPLICAS, steps, w["n_train"])
    candidates = {"NumPy": lambda: numpy_gd(theta0, x, y, steps, d, n) if full
                  else numpy_sgd(theta0, x, y, indices, d, n)}
    try:
        import torch  # noqa: F401
        candidates["PyTorch"] = lambda: torch_impl(theta0, x, y, indices, steps, d, n, full)
    except ImportError:
        pass
    try:
        runner, compile_s = jax_impl(theta0, x, y, indices, steps, d, n, full)
        candidates["JAX"] = runner
        notes.append(f"JAX compile {compile_s:.2f} s (not in the rate)")
    except ImportError:
        pass
    for label, fn in candidates.items():
        rate, out = _median_rate(fn, work, repeats)
        # relative to the parameter scale: an elementwise ratio blows up on parameters near zero
        err = float(np.max(np.abs(out - reference)) / np.max(np.abs(reference)))
        if not err <= 1e-9:  # also catches NaN
            notes.append(f"{label} DISAGREES with dynsim ({err:.1e}); not reported")
            continue
        rows[label] = rate
        notes.append(f"{label} agrees to {err:.1e}")
    return rows, notes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="w1,wide,fullbatch")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}, "
          f"{time.strftime('%Y-%m-%d')}")
    for name in args.workloads.split(","):
        rows, notes = bench(name, args.repeats)
        base_name = next(k for k in ("JAX", "NumPy", "dynsim") if k in rows)
        base = rows[base_name]
        print(f"\n### {name}: {WORKLOADS[name]}\n")
        print(f"| implementation | M replica-steps/s | ratio to {base_name} |")
        print("|---|---|---|")
        for label, rate in rows.items():
            print(f"| {label} | {rate / 1e6:.3f} | {rate / base:.2f} |")
        print("\n" + "; ".join(notes))


if __name__ == "__main__":
    main()
