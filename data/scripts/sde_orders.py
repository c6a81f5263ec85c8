"""Measured orders of the continuous-time trainer's schemes (the "SDE trainer" section; issue 4) to the
results page.

    python data/scripts/sde_orders.py [--results docs/results.md]

Drives ``dynsim.integrators.sde.scheme_stage`` (the function the engine calls) with linear SDEs whose
solutions are known, as ``tests/test_sde.py`` does and with its seed (the same paths): Ornstein-Uhlenbeck
dX = -X dt + dW (additive) for Euler-Maruyama and Heun, geometric Brownian motion dX = mu X dt + s X dW
(multiplicative) for Euler-Maruyama, and dx/dt = -x without noise for EM, Heun and RK4; rewrites the
block between ``<!-- sde:begin -->`` and ``<!-- sde:end -->`` of the results page. Nothing is read from
a run file: every number is recomputed from the seed here (a few tens of seconds).

Block ``sde_network``: Langevin's stationary covariance on a quadratic loss per scheme against the exact
discrete Lyapunov solution of its recursion; SGD against its SDE on the simple network (the noise-induced
mean-loss shift, the paired SGD - SDE difference, the mismatch of the shift's spread), and the loss
feedback of the noise at an interpolating minimum (additive Langevin against loss-scaled and SGD noise),
from runs of the engine made here in a temporary folder (about a minute).

Strong errors: root-mean-square difference to the exact solution driven by the same Brownian path
(20,000 paths drawn on a fine grid of 2^12 steps, summed for every coarser dt = 1/4 ... 1/64); weak
errors: |mean of paired differences| (GBM: of X_T on the same paths; OU: of X_T^2 against the exact
transition on the same increments, 10^6 paths per dt). An order is the least-squares slope of log error
against log dt.

Intervals: 95 % percentile bootstrap over paths for the orders measured on the shared 20,000 paths
(all dt resampled together); the OU weak errors come from independent 10^6-path runs per dt, whose means
are normal to high accuracy, so their interval draws each mean from N(mean, s.e.^2) (a parametric
bootstrap over paths). The noiseless orders are deterministic and have none.
"""
import argparse
import math
import sys
from pathlib import Path

import numpy as np
from numba import njit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dynsim.integrators import SCHEMES  # noqa: E402
from dynsim.integrators.sde import scheme_stage, scheme_stages  # noqa: E402
from dynsim.rng import STREAM_NOISE, fill_normals, normal_pair  # noqa: E402

SEED = 20261125  # tests/conftest.py's SEED: the paths of tests/test_sde.py
T_END = 1.0
N_FINE = 2 ** 12
LEVELS = (10, 9, 8, 7, 6)  # dt = 1/4 ... 1/64 on the fine grid
PATHS = 20_000
CHUNK = 2_000          # paths drawn at a time (the same stream as one draw of all of them)
WEAK_PATHS = 1_000_000
WEAK_STEPS = (4, 8, 16, 32)
N_BOOT = 1000
BEGIN, END = "<!-- sde:begin -->", "<!-- sde:end -->"
EM, HEUN, RK4 = (SCHEMES[n].code for n in ("euler_maruyama", "heun", "rk4"))


@njit  # not cached: the script runs as __main__ and, in the tests, under another module name
def _integrate_linear(scheme, a, sigma, s, x0, dW, level, T, out):
    """dX = a X dt + (sigma + s X) dW on [0, T] with dt = T / (n_fine / 2^level), per path (as tests/test_sde.py)."""
    paths, n_fine = dW.shape
    m = 1 << level
    n = n_fine // m
    dt = T / n
    sqrt_dt = math.sqrt(dt)
    theta = np.empty(1)
    point = np.empty(1)
    acc = np.empty(1)
    drift = np.empty(1)
    noise = np.empty(1)
    for p in range(paths):
        theta[0] = x0
        for k in range(n):
            inc = 0.0
            for q in range(k * m, (k + 1) * m):
                inc += dW[p, q]
            xi = inc / sqrt_dt
            for stage in range(scheme_stages(scheme)):
                at = theta[0] if stage == 0 else point[0]
                drift[0] = a * at
                noise[0] = (sigma + s * at) * xi
                scheme_stage(scheme, stage, theta, point, acc, drift, noise, dt, sqrt_dt)
        out[p] = theta[0]


@njit  # not cached: the script runs as __main__ and, in the tests, under another module name
def _ou_reference(lam, sigma, x0, dW, T, out):
    """OU on the fine grid, exact transition with the midpoint weight (strong error O(fine step))."""
    paths, n_fine = dW.shape
    h = T / n_fine
    decay = math.exp(-lam * h)
    weight = sigma * math.exp(-0.5 * lam * h)
    for p in range(paths):
        x = x0
        for k in range(n_fine):
            x = decay * x + weight * dW[p, k]
        out[p] = x


@njit  # not cached: the script runs as __main__ and, in the tests, under another module name
def _ou_weak_pairs(scheme, lam, sigma, x0, T, n, seed, out):
    """Per path X_T^2 of the scheme minus X_T^2 of the exact OU transition driven by the same increments
    (the exact step's stochastic integral split into its part along dW and an independent rest)."""
    h = T / n
    sqrt_h = math.sqrt(h)
    decay = math.exp(-lam * h)
    c = (1.0 - decay) / lam
    v = (1.0 - decay * decay) / (2.0 * lam)
    rest = math.sqrt(max(v - c * c / h, 0.0))
    theta = np.empty(1)
    point = np.empty(1)
    acc = np.empty(1)
    drift = np.empty(1)
    noise = np.empty(1)
    for p in range(out.shape[0]):
        theta[0] = x0
        x = x0
        for k in range(n):
            xi, zeta = normal_pair(seed, p, STREAM_NOISE, k, 0)
            for stage in range(scheme_stages(scheme)):
                at = theta[0] if stage == 0 else point[0]
                drift[0] = -lam * at
                noise[0] = sigma * xi
                scheme_stage(scheme, stage, theta, point, acc, drift, noise, h, sqrt_h)
            x = decay * x + sigma * (c / sqrt_h * xi + rest * zeta)
        out[p] = theta[0] ** 2 - x * x


def _slope(dts, errors) -> float:
    return float(np.polyfit(np.log(dts), np.log(errors), 1)[0])


def _bootstrap_slope(dts, per_path, reduce, seed=0):
    """(slope, low, high): ``reduce`` maps [level, path] values to one error per level; paths resampled."""
    rng = np.random.default_rng(seed)
    paths = per_path.shape[1]
    boot = [_slope(dts, reduce(per_path[:, rng.integers(0, paths, paths)])) for _ in range(N_BOOT)]
    return (_slope(dts, reduce(per_path)), *np.percentile(boot, [2.5, 97.5]))


def _rms(sq):
    return np.sqrt(sq.mean(axis=1))


def _abs_mean(d):
    return np.abs(d.mean(axis=1))


def path_errors(paths=None) -> dict:
    """Per-level, per-path errors on the shared Brownian paths: OU squared errors of EM and Heun, GBM
    differences of EM (X_T minus the exact X_T); ({name: [level, path]}, dts)."""
    paths = paths or PATHS
    rng = np.random.default_rng(SEED)
    lam, sigma, x0 = 1.0, 1.0, 1.0      # OU
    mu, s = 0.5, 0.8                    # GBM, x0 = 1
    out = {"ou_em": [], "ou_heun": [], "gbm_em": []}
    for start in range(0, paths, CHUNK):
        dW = rng.normal(0.0, math.sqrt(T_END / N_FINE), size=(min(CHUNK, paths - start), N_FINE))
        exact = np.empty(dW.shape[0])
        _ou_reference(lam, sigma, x0, dW, T_END, exact)
        gbm = x0 * np.exp((mu - 0.5 * s * s) * T_END + s * dW.sum(axis=1))
        x = np.empty(dW.shape[0])
        chunk = {name: np.empty((len(LEVELS), dW.shape[0])) for name in out}
        for i, level in enumerate(LEVELS):
            for name, code in (("ou_em", EM), ("ou_heun", HEUN)):
                _integrate_linear(code, -lam, sigma, 0.0, x0, dW, level, T_END, x)
                chunk[name][i] = (x - exact) ** 2
            _integrate_linear(EM, mu, 0.0, s, x0, dW, level, T_END, x)
            chunk["gbm_em"][i] = x - gbm
        for name in out:
            out[name].append(chunk[name])
    dts = np.array([T_END * (1 << level) / N_FINE for level in LEVELS])
    return {name: np.concatenate(v, axis=1) for name, v in out.items()}, dts


def ou_weak_orders(paths=None) -> dict:
    """{scheme: (slope, low, high)} of the OU weak error in E[X_T^2], one independent run per dt."""
    paths = paths or WEAK_PATHS
    out = np.empty(paths)
    rng = np.random.default_rng(1)
    result = {}
    for name, code in (("euler_maruyama", EM), ("heun", HEUN)):
        means, ses = [], []
        for n in WEAK_STEPS:
            _ou_weak_pairs(code, 1.0, 1.0, 1.0, T_END, n, np.uint64(SEED + n), out)
            means.append(out.mean())
            ses.append(out.std() / math.sqrt(paths))
        means, ses = np.array(means), np.array(ses)
        dts = T_END / np.array(WEAK_STEPS, dtype=float)
        draws = np.abs(rng.normal(means, ses, size=(N_BOOT, len(means))))
        boot = [_slope(dts, d) for d in draws]
        result[name] = (_slope(dts, np.abs(means)), *np.percentile(boot, [2.5, 97.5]),
                        float(np.min(np.abs(means) / ses)))
    return result


def deterministic_orders() -> dict:
    """{scheme name: slope} on dx/dt = -x, x(0) = 1 against e^{-1}, dt = 1/8 ... 1/64."""
    zero = np.zeros((1, 2 ** 10))
    out = np.empty(1)
    result = {}
    for name, code in (("euler_maruyama", EM), ("heun", HEUN), ("rk4", RK4)):
        dts, errors = [], []
        for level in (7, 6, 5, 4):
            _integrate_linear(code, -1.0, 0.0, 0.0, 1.0, zero, level, 1.0, out)
            dts.append(2.0 ** level / 2 ** 10)
            errors.append(abs(out[0] - math.exp(-1.0)))
        result[name] = _slope(dts, errors)
    return result


def measure(paths=None, weak_paths=None) -> dict:
    per_path, dts = path_errors(paths)
    return dict(
        ou_em_strong=_bootstrap_slope(dts, per_path["ou_em"], _rms),
        ou_heun_strong=_bootstrap_slope(dts, per_path["ou_heun"], _rms),
        gbm_em_strong=_bootstrap_slope(dts, per_path["gbm_em"] ** 2, _rms),
        gbm_em_weak=_bootstrap_slope(dts, per_path["gbm_em"], _abs_mean),
        ou_weak=ou_weak_orders(weak_paths), deterministic=deterministic_orders(),
        paths=per_path["ou_em"].shape[1], dts=dts)


def _order(t):
    return f"{t[0]:.2f} [{t[1]:.2f}, {t[2]:.2f}]"


def _declared(value) -> str:
    return {0.5: "1/2"}.get(value, f"{value:g}")


def markdown(r: dict) -> str:
    em, heun, rk4 = SCHEMES["euler_maruyama"], SCHEMES["heun"], SCHEMES["rk4"]
    weak = r["ou_weak"]
    det = r["deterministic"]
    lines = [BEGIN, "", f"Generated by `python data/scripts/sde_orders.py` (seed {SEED}, the paths of `tests/test_sde.py`): "
             f"orders as slopes of log error against log dt; strong and GBM weak over dt = 1/{1 / r['dts'][0]:.0f} ... "
             f"1/{1 / r['dts'][-1]:.0f} on {r['paths']:,} shared paths [95 % bootstrap over paths], OU weak over dt = 1/4 ... "
             "1/32 from independent runs of 10^6 paths per dt [95 % parametric bootstrap of each mean; every weak "
             f"error at least {min(w[3] for w in weak.values()):.0f} standard errors from 0]; the declared order in "
             "parentheses. The noiseless orders are deterministic: no interval.", "",
             "| scheme, problem | strong order (declared) | weak order (declared) |", "|---|---|---|",
             f"| Euler-Maruyama, OU (additive) | {_order(r['ou_em_strong'])} ({_declared(em.additive_orders[0])}) | "
             f"{_order(weak['euler_maruyama'])} ({_declared(em.additive_orders[1])}) |",
             f"| Heun, OU (additive) | {_order(r['ou_heun_strong'])} ({_declared(heun.additive_orders[0])}) | "
             f"{_order(weak['heun'])} ({_declared(heun.additive_orders[1])}) |",
             f"| Euler-Maruyama, GBM (multiplicative) | {_order(r['gbm_em_strong'])} "
             f"({_declared(em.multiplicative_orders[0])}) | {_order(r['gbm_em_weak'])} "
             f"({_declared(em.multiplicative_orders[1])}) |",
             f"| deterministic, dx/dt = -x | EM {det['euler_maruyama']:.2f}, Heun {det['heun']:.2f}, RK4 {det['rk4']:.2f} "
             f"(declared {_declared(em.deterministic_order)}, {_declared(heun.deterministic_order)}, "
             f"{_declared(rk4.deterministic_order)}) | (no noise) |",
             "", END]
    return "\n".join(lines)


# -- the stationary law of Langevin and the trainer on the network (block sde_network) -----------------
LANGEVIN_H = np.array([[2.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 0.5]])
LANGEVIN_T, LANGEVIN_DT, LANGEVIN_PATHS = 0.1, 0.05, 20_000


@njit
def _quadratic_langevin(scheme, H, temperature, dt, steps, seed, out):
    """Langevin on L = theta^T H theta / 2 from theta = 0 through the engine's scheme stages, path r's
    normals from the dynsim stream (the recursion and seed of tests/test_sde.py)."""
    dim = H.shape[0]
    sqrt_dt = math.sqrt(dt)
    coef = math.sqrt(2.0 * temperature)
    xi, point, acc = np.empty(dim), np.empty(dim), np.empty(dim)
    drift, noise = np.empty(dim), np.empty(dim)
    for r in range(out.shape[0]):
        theta = out[r]
        theta[:] = 0.0
        for k in range(steps):
            fill_normals(seed, r, STREAM_NOISE, k, xi)
            for stage in range(scheme_stages(scheme)):
                at = theta if stage == 0 else point
                for i in range(dim):
                    acc_i = 0.0
                    for j in range(dim):
                        acc_i += H[i, j] * at[j]
                    drift[i] = -acc_i
                    noise[i] = coef * xi[i]
                scheme_stage(scheme, stage, theta, point, acc, drift, noise, dt, sqrt_dt)


def langevin_stationary(paths=LANGEVIN_PATHS) -> dict:
    """Per scheme: the largest deviation of the sampled stationary covariance from the exact discrete
    Lyapunov solution of its recursion, in standard errors, and that solution's relative distance from
    the continuous law T H^-1 (the scheme's bias at this dt; exact, no interval)."""
    import scipy.linalg

    H, temperature, dt = LANGEVIN_H, LANGEVIN_T, LANGEVIN_DT
    steps = int(30.0 / dt)  # 15 relaxation times of the softest mode
    continuous = temperature * np.linalg.inv(H)
    eye = np.eye(3)
    recursions = {"euler_maruyama": (EM, eye - dt * H, math.sqrt(2 * temperature * dt) * eye),
                  "heun": (HEUN, eye - dt * H + 0.5 * dt * dt * H @ H,
                           math.sqrt(2 * temperature * dt) * (eye - 0.5 * dt * H))}
    out = {}
    for name, (code, M, N) in recursions.items():
        exact = scipy.linalg.solve_discrete_lyapunov(M, N @ N.T)
        theta = np.empty((paths, 3))
        _quadratic_langevin(code, H, temperature, dt, steps, np.uint64(SEED), theta)
        se = np.sqrt((np.outer(np.diag(exact), np.diag(exact)) + exact ** 2) / paths)
        out[name] = dict(max_se=float(np.max(np.abs(np.cov(theta.T) - exact) / se)),
                         bias=float(np.max(np.abs(exact - continuous)) / np.max(np.abs(continuous))))
    return out


def _network_losses(training, *, eta, t_end, replicas, width=16, n_train=16, n_records=2, spacing="linear"):
    """loss_train [record, replica] of the simple network on a teacher task (tests/test_sde.py's runs)."""
    import tempfile

    from dynsim import kinds
    from dynsim.store import RunReader

    tables = dict(run=dict(seed=7, replicas=replicas, steps=int(round(t_end / training.get("dt", eta)))),
                  model=dict(input_dim=1, width=width, activation="tanh", bias_std=0.5, output_bias=False),
                  task=dict(kind="teacher", n_train=n_train, n_test=12, n_probes=2, n_sources=1),
                  training=dict(eta=eta, **training),
                  record=dict(n_records=n_records, spacing=spacing, observables=["loss_train"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.h5"
        result = kinds.run(kinds.config_from_mapping(tables), path, progress=False)
        if not result.ok:
            raise RuntimeError(result.message)
        with RunReader(path) as rd:
            return np.asarray(rd.observable("loss_train"), dtype=float)


def sgd_against_sde(etas=(0.05, 0.025), replicas=1000, t_end=10.0) -> dict:
    """Per eta: final losses of GD, SGD (batch 1) and the SDE with SGD noise (EM, dt = eta), replicas
    sharing their initial parameters across the three runs."""
    out = {}
    for eta in etas:
        out[eta] = {name: _network_losses(training, eta=eta, t_end=t_end, replicas=replicas)[-1]
                    for name, training in (("gd", dict(method="gd")), ("sgd", dict(method="sgd", batch_size=1)),
                                           ("sde", dict(method="sde", noise="sgd", batch_size=1)))}
    return out


def loss_feedback(P=8, temperature=1e-3, replicas=200) -> dict:
    """Mean loss at the records (t = 0 ... 400, log-spaced) of an interpolating student under additive
    Langevin noise, loss-scaled noise and SGD noise (SDE, dt = 0.05)."""
    common = dict(eta=0.1, t_end=400.0, replicas=replicas, width=32, n_train=P, n_records=9, spacing="log")
    runs = {"langevin": dict(method="sde", dt=0.05, noise="langevin", temperature=temperature),
            "loss_scaled": dict(method="sde", dt=0.05, noise="loss_scaled", temperature=0.05),
            "sgd": dict(method="sde", dt=0.05, noise="sgd", batch_size=1)}
    return dict(losses={name: _network_losses(training, **common) for name, training in runs.items()},
                equipartition=temperature * P / 2)


def _paired(values, n_boot=N_BOOT, seed=0):
    """(mean, low, high) of paired per-replica values, bootstrap over replicas."""
    from analysis.blocks import bootstrap_mean

    return bootstrap_mean(values, n_boot=n_boot, seed=seed)


def _spread_mismatch(runs, n_boot=N_BOOT, seed=0):
    """|sd(L_sde - L_gd) / sd(L_sgd - L_gd) - 1| with its bootstrap over replicas (pairs resampled together)."""
    a, b = runs["sde"] - runs["gd"], runs["sgd"] - runs["gd"]
    value = abs(np.std(a) / np.std(b) - 1.0)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        k = rng.integers(0, a.size, a.size)
        boots.append(abs(np.std(a[k]) / np.std(b[k]) - 1.0))
    return float(value), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def network_markdown(stationary: dict, versus: dict, feedback: dict) -> str:
    from analysis.blocks import markers

    begin, end = markers("sde_network")
    g = lambda t: f"{t[0]:.2g} [{t[1]:.2g}, {t[2]:.2g}]"  # noqa: E731
    lines = [begin, "", "Generated by `python data/scripts/sde_orders.py` (the runs and seeds of `tests/test_sde.py`; "
             "95 % bootstrap intervals over replicas or paths).", "",
             f"Langevin on a quadratic loss (3 dimensions, T = {LANGEVIN_T:g}, dt = {LANGEVIN_DT:g}, "
             f"{LANGEVIN_PATHS:,} paths): the sampled stationary covariance against each scheme's exact discrete "
             "Lyapunov solution, and that solution's distance from the continuous law T H^-1 (exact: no interval):", "",
             "| scheme | largest deviation of the sample covariance (standard errors) | relative distance of its "
             "stationary law from T H^-1 |", "|---|---|---|"]
    for name, label in (("euler_maruyama", "Euler-Maruyama"), ("heun", "Heun")):
        lines.append(f"| {label} | {stationary[name]['max_se']:.2f} | {stationary[name]['bias']:.3g} |")
    lines += ["", "SGD (batch 1) against its SDE (Euler-Maruyama, dt = eta, SGD noise) on the simple network "
              "(N = 16, 16 teacher samples, t = 10, 1,000 replicas sharing their initialisation across the runs):", "",
              "| eta | noise-induced shift <L_sgd - L_gd> | <L_sgd - L_sde> | spread mismatch "
              "abs(sd(L_sde - L_gd) / sd(L_sgd - L_gd) - 1) |", "|---|---|---|---|"]
    for eta, runs in versus.items():
        lines.append(f"| {eta:g} | {g(_paired(runs['sgd'] - runs['gd']))} | {g(_paired(runs['sgd'] - runs['sde']))} | "
                     f"{g(_spread_mismatch(runs))} |")
    losses, equipartition = feedback["losses"], feedback["equipartition"]
    lines += ["", f"Loss feedback (an interpolating student: N = 32, P = 8; SDE, dt = 0.05, t = 400, 200 replicas): "
              f"mean training loss at the last two records; additive Langevin at T = 1e-3 against its equipartition "
              f"value T P / 2 = {equipartition:.2g}:", "",
              "| noise | loss at t = 111 | loss at t = 400 |", "|---|---|---|"]
    for name, label in (("langevin", "additive Langevin, T = 1e-3"), ("loss_scaled", "loss-scaled, T = 0.05"),
                        ("sgd", "SGD noise, batch 1")):
        lines.append(f"| {label} | {g(_paired(losses[name][-2]))} | {g(_paired(losses[name][-1]))} |")
    lines += ["", end]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    args = parser.parse_args(argv)
    from analysis.blocks import write_blocks

    write_blocks(args.results, {"sde": markdown(measure()),
                                "sde_network": network_markdown(langevin_stationary(), sgd_against_sde(),
                                                                loss_feedback())})
    return 0


if __name__ == "__main__":
    sys.exit(main())
