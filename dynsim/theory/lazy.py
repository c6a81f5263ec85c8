"""Lazy (linearised) training of the simple network under squared loss, and its check against a run.

Linearising f around the initial parameters (the NTK is then constant, Theta = Theta_0), full-batch
GD on L = (1/P) sum_mu (f_mu - y_mu)^2 / 2 moves the training outputs by
f_{t+1} = f_t - (eta/P) Theta (f_t - y), so on the training set

    f_t = f_0 + (I - (I - eta Theta/P)^t) (y - f_0)                         (discrete GD, step t)
    f_tau = f_0 + (I - exp(-tau Theta/P)) (y - f_0)                          (gradient flow, tau = eta t)

and at any other input x (a probe) f_t(x) = f_0(x) - (eta/P) Theta(x, X) sum_{k<t} (f_k - y), i.e.

    f_t(x) = f_0(x) + Theta(x, X) Theta^-1 (I - (I - eta Theta/P)^t) (y - f_0).

In the eigenbasis of Theta (eigenvalue lam) each mode is a scalar recursion; ``mode_filters``
derives the per-mode factors with SymPy (rsolve, summation, dsolve, integrate), and the numeric
functions below evaluate them with expm1/log1p so that slow modes (eta lam/P << 1) keep full
precision. The lazy one-step response at record t is R_t(x; x_s) = -eta (f_t(x_s) - y_s) Theta_0(x, x_s).

SGD (batches drawn with replacement) and Langevin have the same *mean* in the linearised model,
because each step is linear in the residual with mean matrix I - eta Theta/P; for them the lazy
prediction is that of the replica's expected trajectory (see ``statements.sgd_lazy_moments``).
"""
import dataclasses
import functools

import numpy as np
import sympy

from .codegen import generate

lam, eta, P_sym, tau = sympy.symbols("lam eta P tau", positive=True)
t_sym, k_sym = sympy.symbols("t k", integer=True, nonnegative=True)
MODE_ARGS = (lam, eta, P_sym, t_sym)
FLOW_ARGS = (lam, P_sym, tau)


@functools.lru_cache(maxsize=None)
def mode_filters() -> dict[str, sympy.Expr]:
    """Per-eigenmode factors of the lazy solution, derived from the linearised dynamics.

    gd_residual:  r_t / r_0 for r_{t+1} = (1 - eta lam/P) r_t           (training residual f - y)
    gd_probe:     -(f_t(x) - f_0(x)) / (Theta(x, X) v) per unit initial residual along the mode v:
                  (eta/P) sum_{k<t} (1 - eta lam/P)^k
    flow_residual, flow_probe: the same for gradient flow dr/dtau = -(lam/P) r.
    """
    # Derived in the mode's step size x = eta lam / P, so the printed forms stay those of the
    # recursion ((1 - x)^t, no P^t that would overflow); then x is written out.
    x = sympy.Symbol("x", positive=True)
    r = sympy.Function("r")
    step = sympy.rsolve(r(k_sym + 1) - (1 - x) * r(k_sym), r(k_sym), {r(0): 1})
    geometric = sympy.summation(step, (k_sym, 0, t_sym - 1))
    rate = eta * lam / P_sym
    rho = sympy.Function("rho")
    flow = sympy.dsolve(sympy.Derivative(rho(tau), tau) + lam / P_sym * rho(tau), rho(tau), ics={rho(0): 1}).rhs
    s = sympy.Symbol("s", positive=True)
    flow_probe = sympy.integrate(flow.subs(tau, s), (s, 0, tau)) / P_sym
    return dict(gd_residual=step.subs({k_sym: t_sym, x: rate}), gd_probe=(eta / P_sym * geometric).subs(x, rate),
                flow_residual=flow, flow_probe=sympy.factor_terms(flow_probe))


def compiled_mode_filters():
    """The mode filters as generated functions: gd_* take (lam, eta, P, t), flow_* (lam, P, tau)."""
    filters = mode_filters()
    return {name: generate(f"lazy_{name}", expr, MODE_ARGS if name.startswith("gd") else FLOW_ARGS)
            for name, expr in filters.items()}


def matrix_equations() -> tuple[sympy.Eq, ...]:
    """The lazy solutions in matrix form, for display."""
    P = sympy.Symbol("P", integer=True, positive=True)
    K = sympy.Symbol("K", integer=True, positive=True)
    Theta = sympy.MatrixSymbol("Theta", P, P)
    Theta_x = sympy.MatrixSymbol("Theta_x", K, P)  # probes x training set
    f0, y, ft = sympy.MatrixSymbol("f_0", P, 1), sympy.MatrixSymbol("y", P, 1), sympy.MatrixSymbol("f_t", P, 1)
    f0x, ftx = sympy.MatrixSymbol("f_0^x", K, 1), sympy.MatrixSymbol("f_t^x", K, 1)  # at K other inputs x
    identity = sympy.Identity(P)
    growth = identity - sympy.MatPow(identity - eta * Theta / P, t_sym)
    return (sympy.Eq(ft, f0 + growth * (y - f0), evaluate=False),
            sympy.Eq(ftx, f0x + Theta_x * Theta.I * growth * (y - f0), evaluate=False))


@dataclasses.dataclass(frozen=True)
class LazyPrediction:
    """Outputs of the linearised network on the training set and on other inputs."""

    steps: np.ndarray    # [T] (or times tau for gradient flow)
    f_train: np.ndarray  # [T, P]
    f_other: np.ndarray  # [T, K]


def _modes(ntk_train, f0_train, y):
    lam_k, vecs = np.linalg.eigh(np.asarray(ntk_train, dtype=np.float64))
    lam_k = np.maximum(lam_k, 0.0)  # Theta is a Gram matrix: negative eigenvalues are rounding
    coeff = vecs.T @ (np.asarray(f0_train, dtype=np.float64) - np.asarray(y, dtype=np.float64))
    return lam_k, vecs, coeff


def _assemble(residual, probe, vecs, coeff, y, f0_other, ntk_other_train):
    f_train = y + (residual * coeff) @ vecs.T
    f_other = f0_other - (probe * coeff) @ (ntk_other_train @ vecs).T
    return f_train, f_other


def lazy_gd(ntk_train, ntk_other_train, f0_train, f0_other, y, eta_value, steps) -> LazyPrediction:
    """Lazy full-batch GD after each of ``steps`` (integers), from the kernel at initialisation.

    ntk_train [P, P] = Theta_0(X, X), ntk_other_train [K, P] = Theta_0(x_k, X); f0_* the initial outputs.
    """
    steps = np.asarray(steps, dtype=np.int64)
    lam_k, vecs, coeff = _modes(ntk_train, f0_train, y)
    n = vecs.shape[0]
    x = eta_value * lam_k / n                         # eta lam / P per mode
    t = steps[:, None].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        # (1 - x)^t = exp(t log1p(-x)) for x < 1 (exact for slow modes); plain power otherwise.
        small = x < 1.0
        log_base = np.log1p(-np.where(small, x, 0.0))
        residual = np.where(small, np.exp(t * log_base), np.power(1.0 - x, t))
        one_minus = np.where(small, -np.expm1(t * log_base), 1.0 - np.power(1.0 - x, t))
        probe = np.where(lam_k > 0, one_minus / np.where(lam_k > 0, lam_k, 1.0), eta_value * t / n)
    f_train, f_other = _assemble(residual, probe, vecs, coeff, np.asarray(y, dtype=np.float64),
                                 np.asarray(f0_other, dtype=np.float64), np.asarray(ntk_other_train))
    return LazyPrediction(steps, f_train, f_other)


def lazy_gradient_flow(ntk_train, ntk_other_train, f0_train, f0_other, y, times) -> LazyPrediction:
    """Lazy gradient flow at continuous times tau (= eta * step)."""
    times = np.asarray(times, dtype=np.float64)
    lam_k, vecs, coeff = _modes(ntk_train, f0_train, y)
    n = vecs.shape[0]
    rate = times[:, None] * lam_k / n
    residual = np.exp(-rate)
    with np.errstate(divide="ignore", invalid="ignore"):
        probe = np.where(lam_k > 0, -np.expm1(-rate) / np.where(lam_k > 0, lam_k, 1.0), times[:, None] / n)
    f_train, f_other = _assemble(residual, probe, vecs, coeff, np.asarray(y, dtype=np.float64),
                                 np.asarray(f0_other, dtype=np.float64), np.asarray(ntk_other_train))
    return LazyPrediction(times, f_train, f_other)


# ---------------------------------------------------------------------------------------------
# Theory against a run file.

@dataclasses.dataclass(frozen=True)
class LazyComparison:
    """Per record: the lazy prediction next to what the run recorded.

    response_* [record, replica, source, probe]; loss_train_* [record, replica];
    ntk_lazy [replica, probe, probe2] is Theta_0 (constant in the lazy regime), ntk_simulated the
    recorded NTK [record, replica, probe, probe2] (None when not recorded).
    """

    path: str
    kernel: str
    steps: np.ndarray
    times: np.ndarray
    response_lazy: np.ndarray
    response_simulated: np.ndarray
    loss_train_lazy: np.ndarray
    loss_train_simulated: np.ndarray | None
    ntk_lazy: np.ndarray
    ntk_simulated: np.ndarray | None

    @property
    def response_error_per_record(self) -> np.ndarray:
        """|R_sim - R_lazy| / |R_sim| per record (norms over replicas, sources, probes)."""
        diff = (self.response_simulated - self.response_lazy).reshape(len(self.steps), -1)
        ref = self.response_simulated.reshape(len(self.steps), -1)
        return np.linalg.norm(diff, axis=1) / np.linalg.norm(ref, axis=1)

    @property
    def response_error(self) -> float:
        """|R_sim - R_lazy| / |R_sim| over all records."""
        return float(np.linalg.norm(self.response_simulated - self.response_lazy)
                     / np.linalg.norm(self.response_simulated))


KERNELS = ("empirical", "infinite_width")


def compare_lazy(path, kernel: str = "empirical") -> LazyComparison:
    """Lazy prediction for every record of a run file, next to the recorded response.

    ``kernel``: "empirical" uses each replica's own Theta_0, computed by the theory from the
    file's initial parameters; "infinite_width" uses the expected NTK at initialisation
    (``kernels.init_kernels``). The initial outputs f_0 are always the replica's own.
    Needs squared loss, no weight decay, and the ``response`` observable.
    """
    from ..kinds import stored_config
    from ..store import RunReader, StoreError
    from .kernels import init_kernels
    from .network import empirical_ntk, network_outputs

    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")
    with RunReader(path) as reader:
        config = stored_config(reader)
        if type(config).KIND != "simple":
            raise ValueError(f"{path}: the lazy prediction is for the simple network; this is a "
                             f"{type(config).KIND} file")
        if config.training.loss != "squared":
            raise ValueError(f"{path}: the lazy prediction is for squared loss; this run uses "
                             f"{config.training.loss!r}")
        if config.training.weight_decay != 0.0:
            raise ValueError(f"{path}: the lazy prediction has no weight decay; this run has "
                             f"weight_decay = {config.training.weight_decay}")
        if "response" not in reader.observable_names:
            raise StoreError(f"{path} has no 'response' observable to compare with")
        model, eta_value = config.model, float(config.training.eta)
        x_train, y_train = reader.dataset("data/x_train"), reader.dataset("data/y_train")
        x_probe, source_index = reader.dataset("probes/x"), reader.dataset("sources/index")
        theta0 = reader.dataset("params/initial")
        steps, times = reader.steps, reader.times
        response_sim = reader.observable("response")
        loss_sim = reader.observable("loss_train") if "loss_train" in reader.observable_names else None
        ntk_sim = reader.observable("ntk") if "ntk" in reader.observable_names else None
    expected = init_kernels(model, np.concatenate([x_train, x_probe]), np.concatenate([x_train, x_probe])).ntk \
        if kernel == "infinite_width" else None
    n_train = x_train.shape[0]
    responses, losses, ntk_probe = [], [], []
    for theta in theta0:
        if expected is None:
            both = np.concatenate([x_train, x_probe])
            full = empirical_ntk(model, theta, both, both)
        else:
            full = expected
        k_tt, k_pt, k_pp = full[:n_train, :n_train], full[n_train:, :n_train], full[n_train:, n_train:]
        pred = lazy_gd(k_tt, k_pt, network_outputs(model, theta, x_train), network_outputs(model, theta, x_probe),
                       y_train, eta_value, steps)
        residual = pred.f_train - y_train                               # [T, P]
        # R_t(x_p; x_s) = -eta (f_t(x_s) - y_s) Theta_0(x_p, x_s)
        responses.append(-eta_value * residual[:, source_index, None] * k_pt[:, source_index].T[None])
        losses.append(0.5 * np.mean(residual ** 2, axis=1))
        ntk_probe.append(k_pp)
    return LazyComparison(path=str(path), kernel=kernel, steps=steps, times=times,
                          response_lazy=np.stack(responses, axis=1), response_simulated=response_sim,
                          loss_train_lazy=np.stack(losses, axis=1), loss_train_simulated=loss_sim,
                          ntk_lazy=np.stack(ntk_probe), ntk_simulated=ntk_sim)
