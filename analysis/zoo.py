"""Adversarial transfer between different models (issue 22, item 1; ../shared/papers/companions.md).

A *zoo* is a set of run files of the deep MLP kind trained on the same data (same task and data
seed): each file is one *family* (depth, width, activation, trainer), each replica one model. On the
test inputs every model crafts FGSM and PGD examples against its own loss, and every model is
evaluated on every model's examples:

* T[i, j] = among the test inputs model j classifies correctly, the fraction it misclassifies after
  the attack crafted on model i (the diagonal is the white-box rate); the control perturbs by a
  random direction of the same norm (random signs for L_inf, a random unit vector for L2);
* the family x family matrix: the mean of T over the model pairs (i != j) of two families, with a
  95 % bootstrap interval that resamples the models of each family (not the pairs);
* what predicts transfer between two models (pair quantities, symmetric): the cosine of their
  input gradients of the loss at the test inputs, the agreement of their classes at random points
  at the attack's radius around them ("meeting halfway" near the data), the alignment
  <K_i, K_j>_F / (|K_i| |K_j|) of their empirical NTKs (summed over the logits) on a set of test
  inputs, and their generalisation (the mean of the two test accuracies);
* the association of T with each predictor, for pair data: Spearman's rho over the ordered pairs
  i != j, its p-value from a Mantel permutation test that permutes the *model labels* (rows and
  columns together, 10,000 permutations), and a 95 % interval of rho from a bootstrap over models
  (a resampled model set, its pairs of distinct originals). The pairs of 4 x F models are not
  independent samples: each model is in many pairs, which is why neither the p-value nor the
  interval treats them as such.

NumPy throughout (the attacks need input gradients of different architectures, at analysis time).
"""
import dataclasses
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from dynsim.kinds import stored_config
from dynsim.store import RunReader

from .sharpness import forward_pass

N_BOOT = 2000
N_PERMUTATIONS = 10_000
PGD_STEPS, STEP_FRACTION = 10, 0.25


@dataclasses.dataclass(frozen=True)
class Model:
    family: str
    replica: int
    arch: object
    theta: np.ndarray

    def logits(self, x) -> np.ndarray:
        return self.arch.logits(self.theta, x)

    def predict(self, x) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)


def load_zoo(paths) -> tuple[list[Model], object]:
    """The models of every run file (family = the file's stem) at their last record, and the shared
    data set; ValueError when the files were trained on different data or record no parameters."""
    models, data = [], None
    for path in paths:
        with RunReader(path) as rd:
            config = stored_config(rd)
            if type(config).KIND != "mlp":
                raise ValueError(f"{path}: a zoo is made of deep MLP run files (model.kind = 'mlp')")
            file_data = rd.data()
            theta = rd.trajectory(slice(-1, None))[0] if rd.trajectory_replicas else rd.checkpoint["params"]
        if data is None:
            data = file_data
        elif not (np.array_equal(data.x_test, file_data.x_test) and np.array_equal(data.y_test, file_data.y_test)):
            raise ValueError(f"{path} was trained on other data than {paths[0]}: give the zoo one [task] and data seed")
        models += [Model(Path(path).stem, r, config.architecture, np.asarray(t, dtype=np.float64))
                   for r, t in enumerate(theta)]
    return models, data


# -- gradients in input space and the NTK, for any architecture --------------------------------------------
def input_gradient(model: Model, x, labels) -> tuple[np.ndarray, np.ndarray]:
    """(per-sample loss [n], d loss / d x [n, D]) of the softmax cross-entropy at each row of x."""
    layers, hs, slopes, _, _, p = forward_pass(model.arch, model.theta, x)
    n = len(hs[0])
    labels = np.asarray(labels, dtype=np.int64)
    loss = -np.log(p[np.arange(n), labels])
    delta = p
    delta[np.arange(n), labels] -= 1.0
    for l in range(len(layers) - 1, 0, -1):
        delta = (delta @ layers[l][0].T) * slopes[l - 1]
    return loss, delta @ layers[0][0].T


def ntk_matrix(model: Model, x) -> np.ndarray:
    """K(x_a, x_b) = sum_k grad_theta z_k(x_a) . grad_theta z_k(x_b) [n, n]: per layer, the Gram matrix of
    its inputs times that of its back-propagated logit gradients (plus the bias terms)."""
    layers, hs, slopes, _, _, _ = forward_pass(model.arch, model.theta, x)
    n, classes = len(hs[0]), model.arch.classes
    kernel = np.zeros((n, n))
    delta = np.broadcast_to(np.eye(classes), (n, classes, classes)).copy()  # [sample, logit k, unit]
    for l in range(len(layers) - 1, -1, -1):
        W, b = layers[l]
        gram_in = hs[l] @ hs[l].T + (1.0 if b is not None else 0.0)
        gram_delta = np.einsum("akj,bkj->ab", delta, delta)
        kernel += gram_in * gram_delta
        if l > 0:
            delta = (delta @ W.T) * slopes[l - 1][:, None, :]
    return kernel


# -- attacks -------------------------------------------------------------------------------------------------
def _step(grad, norm):
    if norm == "linf":
        return np.sign(grad)
    length = np.linalg.norm(grad, axis=1, keepdims=True)
    return np.where(length > 0, grad / np.where(length > 0, length, 1.0), 0.0)


def craft(model: Model, x, labels, eps: float, *, norm: str = "l2", steps: int = 1) -> np.ndarray:
    """FGSM (steps = 1: x + eps * the loss gradient's sign or unit direction) or PGD (steps of
    STEP_FRACTION * eps, each projected back onto the eps-ball around x)."""
    x = np.asarray(x, dtype=np.float64)
    if steps == 1:
        return x + eps * _step(input_gradient(model, x, labels)[1], norm)
    out = x.copy()
    for _ in range(steps):
        out = out + STEP_FRACTION * eps * _step(input_gradient(model, out, labels)[1], norm)
        move = out - x
        if norm == "linf":
            move = np.clip(move, -eps, eps)
        else:
            length = np.linalg.norm(move, axis=1, keepdims=True)
            move = move * np.minimum(1.0, eps / np.maximum(length, 1e-300))
        out = x + move
    return out


def transfer_matrix(models, x, labels, eps: float, *, norm: str = "l2", steps: int = 1) -> np.ndarray:
    """T [source, target] (module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    correct = np.array([m.predict(x) == labels for m in models])           # [target, input]
    out = np.empty((len(models), len(models)))
    for i, source in enumerate(models):
        adversarial = craft(source, x, labels, eps, norm=norm, steps=steps)
        for j, target in enumerate(models):
            fooled = target.predict(adversarial) != labels
            out[i, j] = fooled[correct[j]].mean() if correct[j].any() else np.nan
    return out


def control_rates(models, x, labels, eps: float, *, norm: str = "l2", seed: int = 0) -> np.ndarray:
    """[target]: the same rate under a random direction of the same norm."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    direction = np.sign(rng.standard_normal(x.shape)) if norm == "linf" else _step(rng.standard_normal(x.shape), "l2")
    moved = x + eps * direction
    labels = np.asarray(labels, dtype=np.int64)
    out = np.empty(len(models))
    for j, m in enumerate(models):
        correct = m.predict(x) == labels
        out[j] = (m.predict(moved) != labels)[correct].mean()
    return out


# -- pair predictors -------------------------------------------------------------------------------------
def predictors(models, x, labels, radius: float, *, kernel_inputs: int = 48, directions: int = 8, seed: int = 0) -> dict:
    """{name: [model, model] symmetric matrix}: gradient cosine, agreement near the data, NTK alignment,
    generalisation (module docstring)."""
    labels = np.asarray(labels, dtype=np.int64)
    grads = [input_gradient(m, x, labels)[1] for m in models]
    unit = [g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-300) for g in grads]
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((directions,) + np.shape(x))
    u /= np.linalg.norm(u, axis=2, keepdims=True)
    near = (np.asarray(x)[None] + radius * u).reshape(-1, np.shape(x)[1])
    classes = np.array([m.predict(near) for m in models])
    kernels = [ntk_matrix(m, np.asarray(x)[:kernel_inputs]) for m in models]
    accuracy = np.array([np.mean(m.predict(x) == labels) for m in models])
    n = len(models)
    out = {name: np.eye(n) for name in ("gradient_cosine", "agreement_near_data", "ntk_alignment")}
    out["generalisation"] = 0.5 * (accuracy[:, None] + accuracy[None, :])
    for i in range(n):
        for j in range(i + 1, n):
            out["gradient_cosine"][i, j] = np.mean(np.sum(unit[i] * unit[j], axis=1))
            out["agreement_near_data"][i, j] = np.mean(classes[i] == classes[j])
            out["ntk_alignment"][i, j] = np.sum(kernels[i] * kernels[j]) / (np.linalg.norm(kernels[i])
                                                                          * np.linalg.norm(kernels[j]))
            for name in ("gradient_cosine", "agreement_near_data", "ntk_alignment"):
                out[name][j, i] = out[name][i, j]
    return out


# -- statistics for pair data ----------------------------------------------------------------------------
def _off_diagonal(matrix, index=None):
    index = np.arange(matrix.shape[0]) if index is None else np.asarray(index)
    sub = matrix[np.ix_(index, index)]
    distinct = index[:, None] != index[None, :]
    return sub[distinct]


def _rho(a, b) -> float:
    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return np.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def mantel(transfer, predictor, *, permutations: int | None = None, seed: int = 0) -> tuple[float, float]:
    """(Spearman rho over the ordered pairs i != j, two-sided Mantel p-value permuting model labels;
    ``permutations`` default N_PERMUTATIONS)."""
    permutations = N_PERMUTATIONS if permutations is None else permutations
    t = _off_diagonal(transfer)
    rho = _rho(t, _off_diagonal(predictor))
    rng = np.random.default_rng(seed)
    n = transfer.shape[0]
    null = np.array([_rho(t, _off_diagonal(predictor[np.ix_(perm, perm)]))
                     for perm in (rng.permutation(n) for _ in range(permutations))])
    return rho, float((np.sum(np.abs(null) >= abs(rho)) + 1) / (permutations + 1))


def rho_interval(transfer, predictor, *, n_boot: int | None = None, seed: int = 0) -> tuple[float, float]:
    """95 % interval of Spearman rho from a bootstrap over models (pairs of distinct originals)."""
    n_boot = N_BOOT if n_boot is None else n_boot
    rng = np.random.default_rng(seed)
    n = transfer.shape[0]
    values = []
    for _ in range(n_boot):
        index = rng.integers(0, n, n)
        values.append(_rho(_off_diagonal(transfer, index), _off_diagonal(predictor, index)))
    values = np.array(values)
    values = values[np.isfinite(values)]
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def family_matrix(transfer, families, *, n_boot: int | None = None, seed: int = 0) -> tuple[list, np.ndarray]:
    """(family names, [F, F, 3] mean, low, high): T over the pairs of distinct models of two families,
    the interval from resampling each family's models."""
    n_boot = N_BOOT if n_boot is None else n_boot
    names = list(dict.fromkeys(families))
    members = {f: np.flatnonzero(np.asarray(families) == f) for f in names}
    rng = np.random.default_rng(seed)
    out = np.full((len(names), len(names), 3), np.nan)
    for a, fa in enumerate(names):
        for b, fb in enumerate(names):
            def mean_of(ia, ib):
                block = transfer[np.ix_(ia, ib)]
                keep = ia[:, None] != ib[None, :]
                return float(block[keep].mean()) if keep.any() else np.nan
            boots = [mean_of(rng.choice(members[fa], members[fa].size), rng.choice(members[fb], members[fb].size))
                     for _ in range(n_boot)]
            boots = np.array(boots)
            boots = boots[np.isfinite(boots)]
            out[a, b] = (mean_of(members[fa], members[fb]), np.percentile(boots, 2.5), np.percentile(boots, 97.5))
    return names, out
