"""Adversarial examples and their transfer between independently trained replicas (#10 part B).

The replicas of one run are one architecture trained on one task from different seeds (the
"meet you halfway" question, ../shared/papers/companions.md C, as dynsim makes it testable).
For a replica i and a test input x with label y (sign s = +1 / -1, from y and the class threshold):

* **attack direction**: the margin gradient -s grad_x f_i(x), which lowers s (f - threshold); for
  cross-entropy it is the direction of grad_x loss, so FGSM on the margin is FGSM on the loss (for
  squared error the loss gradient would point away from the boundary once |f| > 1; the margin
  does not);
* **FGSM** (``steps = 1``): x' = x + eps sign(d) (L_inf) or x + eps d / |d| (L2);
* **PGD** (``steps > 1``): that step with size ``step_fraction * eps``, repeated, each time projected
  back onto the eps-ball around x (clipped per coordinate for L_inf);
* **transfer**: T[e, i, j] = among the inputs that replica j classifies correctly, the fraction it
  misclassifies after the attack crafted on replica i at budget eps_e (the diagonal is the
  white-box success rate); the **control** perturbs by random directions of the same norm
  (random signs for L_inf, a random unit vector for L2).

Explanatory quantities: cosine of input gradients between replicas on the same inputs, alignment
<K_i, K_j>_F / (|K_i| |K_j|) of their empirical NTKs on a set of inputs, and agreement of their
classes at random points at radius r around the data. The crafting and cross-evaluation kernels run
blocks of replicas on threads (``dynsim.parallel``; the others are cheap and serial); the Python
functions validate, allocate and seed.
"""
import numpy as np
from numba import njit

from .models.simple import MI_INPUT_DIM, MI_WIDTH, add_gradient_outlined, forward_outlined
from .observables.representation import input_gradient, probe_outputs
from .parallel import over_replicas

NORMS = ("linf", "l2")
_LINF = 0


def _model_arrays(model, params, x):
    mi, mf = model.kernel_arrays()
    params = np.ascontiguousarray(params, dtype=np.float64)
    x = np.ascontiguousarray(x, dtype=np.float64)
    if params.ndim != 2 or params.shape[1] != model.n_params:
        raise ValueError(f"params: expected [replicas, {model.n_params}] for this model, got {params.shape}")
    if x.ndim != 2 or x.shape[1] != model.input_dim:
        raise ValueError(f"x: expected [inputs, {model.input_dim}] (model.input_dim), got {x.shape}")
    return mi, mf, params, x


def outputs(model, params, x) -> np.ndarray:
    """f_r(x_k) for every replica r and input k: [replicas, inputs]."""
    mi, mf, params, x = _model_arrays(model, params, x)
    out = np.empty((params.shape[0], x.shape[0], 1))
    probe_outputs(params, x, mi, mf, out)  # the observables' kernel: f at every input, every replica
    return out[..., 0]


def input_gradients(model, params, x) -> tuple[np.ndarray, np.ndarray]:
    """(f [replicas, inputs], grad_x f [replicas, inputs, input_dim])."""
    mi, mf, params, x = _model_arrays(model, params, x)
    f = np.empty((params.shape[0], x.shape[0]))
    grad = np.empty((params.shape[0], x.shape[0], x.shape[1]))
    _input_gradients(params, x, mi, mf, f, grad)
    return f, grad


def parameter_jacobians(model, params, x) -> np.ndarray:
    """d f_r(x_k) / d theta: [replicas, inputs, n_params] (rows of the empirical NTK)."""
    mi, mf, params, x = _model_arrays(model, params, x)
    out = np.zeros((params.shape[0], x.shape[0], model.n_params))
    _jacobians(params, x, mi, mf, out)
    return out


def label_signs(y, threshold: float) -> np.ndarray:
    """+1 for the upper class (y > threshold), -1 for the lower."""
    return np.where(np.asarray(y, dtype=np.float64) > threshold, 1.0, -1.0)


def craft(model, params, x, y, eps, *, norm: str = "linf", steps: int = 1, step_fraction: float = 0.25,
          threshold: float = 0.0) -> np.ndarray:
    """Adversarial inputs [replicas, len(eps), inputs, input_dim] crafted on every replica.

    ``steps = 1`` is FGSM; more steps is PGD with step ``step_fraction * eps``, projected onto the
    eps-ball of ``norm`` ('linf' or 'l2') after every step.
    """
    if norm not in NORMS:
        raise ValueError(f"norm: got {norm!r}; allowed: {', '.join(NORMS)}")
    if steps < 1:
        raise ValueError(f"steps: got {steps}; use 1 for FGSM or more for PGD")
    eps = np.ascontiguousarray(eps, dtype=np.float64).ravel()
    if np.any(eps < 0) or not np.all(np.isfinite(eps)):
        raise ValueError("eps: budgets must be finite and >= 0")
    mi, mf, params, x = _model_arrays(model, params, x)
    signs = label_signs(y, threshold)
    if signs.shape != (x.shape[0],):
        raise ValueError(f"y: expected {x.shape[0]} labels, got shape {np.shape(y)}")
    out = np.empty((params.shape[0], eps.size, x.shape[0], x.shape[1]))
    over_replicas(_craft, params.shape[0], params, x, signs, eps, NORMS.index(norm), steps, step_fraction, mi, mf,
                  out)
    return out


def random_perturbations(x, eps, *, norm: str = "linf", seed: int = 0) -> np.ndarray:
    """The control: x + eps * (random signs) (linf) or x + eps * (random unit vector) (l2): [len(eps), inputs, D].

    One random direction per input, shared by every budget (so the control scales like the attack).
    """
    if norm not in NORMS:
        raise ValueError(f"norm: got {norm!r}; allowed: {', '.join(NORMS)}")
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if norm == "linf":
        direction = rng.choice([-1.0, 1.0], size=x.shape)
    else:
        direction = rng.standard_normal(x.shape)
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    eps = np.asarray(eps, dtype=np.float64).ravel()
    return x[None] + eps[:, None, None] * direction[None]


def cross_outputs(model, params, x_adv) -> np.ndarray:
    """f_j(x_adv[i, e, k]) for every target replica j: [sources, targets, budgets, inputs]."""
    mi, mf = model.kernel_arrays()
    params = np.ascontiguousarray(params, dtype=np.float64)
    x_adv = np.ascontiguousarray(x_adv, dtype=np.float64)
    out = np.empty((x_adv.shape[0], params.shape[0], x_adv.shape[1], x_adv.shape[2]))
    over_replicas(_cross_outputs, params.shape[0], params, x_adv, mi, mf, out)
    return out


def transfer_matrix(model, params, x, y, eps, *, norm="linf", steps=1, step_fraction=0.25, threshold=0.0):
    """T [budgets, source i, target j] and the number of inputs target j got right before the attack."""
    signs = label_signs(y, threshold)
    clean = outputs(model, params, x)
    correct = (clean - threshold) * signs[None, :] > 0  # [target, input]
    x_adv = craft(model, params, x, y, eps, norm=norm, steps=steps, step_fraction=step_fraction, threshold=threshold)
    after = cross_outputs(model, params, x_adv)  # [i, j, e, k]
    fooled = ((after - threshold) * signs <= 0) & correct[None, :, None, :]
    counts = correct.sum(axis=1)
    rate = fooled.sum(axis=3) / np.maximum(counts, 1)[None, :, None]
    return np.transpose(rate, (2, 0, 1)), counts


def control_rates(model, params, x, y, eps, *, norm="linf", threshold=0.0, seed=0) -> np.ndarray:
    """[budgets, target j]: the fraction of j's correct inputs misclassified after a random perturbation."""
    signs = label_signs(y, threshold)
    clean = outputs(model, params, x)
    correct = (clean - threshold) * signs[None, :] > 0
    moved = random_perturbations(x, eps, norm=norm, seed=seed)
    after = cross_outputs(model, params, moved[None])[0]  # [j, e, k]
    fooled = ((after - threshold) * signs <= 0) & correct[:, None, :]
    return np.transpose(fooled.sum(axis=2) / np.maximum(correct.sum(axis=1), 1)[:, None])


def gradient_cosines(model, params, x) -> np.ndarray:
    """[i, j]: mean over inputs of cos(grad_x f_i(x), grad_x f_j(x))."""
    _, grad = input_gradients(model, params, x)
    norm = np.linalg.norm(grad, axis=2, keepdims=True)
    unit = np.divide(grad, norm, out=np.zeros_like(grad), where=norm > 0)
    return np.einsum("ikd,jkd->ij", unit, unit) / x.shape[0]


def ntk_alignment(model, params, x) -> np.ndarray:
    """[i, j]: <K_i, K_j>_F / (|K_i|_F |K_j|_F), K_r = J_r J_r^T the empirical NTK on the inputs x."""
    jac = parameter_jacobians(model, params, x)
    kernels = np.einsum("rkp,rlp->rkl", jac, jac)
    flat = kernels.reshape(kernels.shape[0], -1)
    norms = np.linalg.norm(flat, axis=1)
    return (flat @ flat.T) / np.outer(norms, norms)


def boundary_agreement(model, params, x, radius: float, *, directions: int = 8, threshold=0.0, seed=0) -> np.ndarray:
    """[i, j]: fraction of random points at L2 distance ``radius`` from the inputs where i and j agree on the class."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    u = rng.standard_normal((directions,) + x.shape)
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    points = (x[None] + radius * u).reshape(-1, x.shape[1])
    cls = outputs(model, params, points) > threshold  # [replica, point]
    same = cls[:, None, :] == cls[None, :, :]
    return same.mean(axis=2)


@njit(cache=True, error_model="numpy")
def _input_gradients(params, x, mi, mf, f, grad):
    width = mi[MI_WIDTH]
    for r in range(params.shape[0]):
        z = np.empty(width)
        h = np.empty(width)
        for k in range(x.shape[0]):
            f[r, k] = input_gradient(params[r], x[k], mi, mf, z, h, grad[r, k])


@njit(cache=True, error_model="numpy")
def _jacobians(params, x, mi, mf, out):
    width = mi[MI_WIDTH]
    for r in range(params.shape[0]):
        z = np.empty(width)
        h = np.empty(width)
        for k in range(x.shape[0]):
            forward_outlined(params[r], x[k], mi, mf, z, h)
            add_gradient_outlined(params[r], x[k], mi, mf, z, h, 1.0, out[r, k])


@njit(cache=True, error_model="numpy")
def _step(xt, grad, sign, size, norm_code):
    """xt += size * (unit step along -sign * grad in the norm's geometry)."""
    n = xt.shape[0]
    if norm_code == _LINF:
        for d in range(n):
            g = -sign * grad[d]
            xt[d] += size * (1.0 if g > 0.0 else (-1.0 if g < 0.0 else 0.0))
        return
    sq = 0.0
    for d in range(n):
        sq += grad[d] * grad[d]
    if sq == 0.0:
        return
    scale = -sign * size / np.sqrt(sq)
    for d in range(n):
        xt[d] += scale * grad[d]


@njit(cache=True, error_model="numpy")
def _project(xt, x0, eps, norm_code):
    n = xt.shape[0]
    if norm_code == _LINF:
        for d in range(n):
            xt[d] = min(max(xt[d], x0[d] - eps), x0[d] + eps)
        return
    sq = 0.0
    for d in range(n):
        sq += (xt[d] - x0[d]) ** 2
    if sq > eps * eps:
        shrink = eps / np.sqrt(sq)
        for d in range(n):
            xt[d] = x0[d] + (xt[d] - x0[d]) * shrink


@njit(cache=True, error_model="numpy", nogil=True)
def _craft(r0, r1, params, x, signs, eps, norm_code, steps, step_fraction, mi, mf, out):
    width, n_in = mi[MI_WIDTH], mi[MI_INPUT_DIM]
    for r in range(r0, r1):
        z = np.empty(width)
        h = np.empty(width)
        grad = np.empty(n_in)
        for e in range(eps.shape[0]):
            size = eps[e] if steps == 1 else step_fraction * eps[e]
            for k in range(x.shape[0]):
                xt = out[r, e, k]
                xt[:] = x[k]
                for _ in range(steps):
                    input_gradient(params[r], xt, mi, mf, z, h, grad)
                    _step(xt, grad, signs[k], size, norm_code)
                    _project(xt, x[k], eps[e], norm_code)


@njit(cache=True, error_model="numpy", nogil=True)
def _cross_outputs(j0, j1, params, x_adv, mi, mf, out):
    width = mi[MI_WIDTH]
    n_src, n_eps, n_x = x_adv.shape[0], x_adv.shape[1], x_adv.shape[2]
    for j in range(j0, j1):
        z = np.empty(width)
        h = np.empty(width)
        for i in range(n_src):
            for e in range(n_eps):
                for k in range(n_x):
                    out[i, j, e, k] = forward_outlined(params[j], x_adv[i, e, k], mi, mf, z, h)

