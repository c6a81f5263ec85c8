"""Sharpness of a deep MLP's training loss: exact Hessian-vector products and the top eigenvalue.

For the network of ``dynsim.models.deep`` (h_l = sigma(h_{l-1} W_l + b_l), softmax cross-entropy
L = mean_n l(x_n, y_n)), ``hessian_vector`` computes H v exactly by Pearlmutter's R-operator: the
directional derivative along v of every quantity of the forward and backward pass,

    R(a_l) = R(h_{l-1}) W_l + h_{l-1} V_l + v_l,      R(h_l) = sigma'(a_l) R(a_l),
    R(p)   = p (R(z) - <p, R(z)>)                      (the softmax, z the logits),
    R(da_l) = R(dh_l) sigma'(a_l) + dh_l sigma''(a_l) R(a_l),   R(dh_{l-1}) = R(da_l) W_l^T + da_l V_l^T,
    R(g_W_l) = R(h_{l-1})^T da_l + h_{l-1}^T R(da_l),    R(g_b_l) = sum_n R(da_l),

(V_l, v_l the blocks of v; da, dh the back-propagated gradients), in O(cost of a gradient). The
sharpness is the largest eigenvalue of H, found by power iteration on these products with a
Rayleigh quotient (``top_eigenvalue``). NumPy on the whole training set at once: it runs at
analysis time on recorded parameters, not in the simulator.
"""
import math

import numpy as np
from scipy.special import erf

_SQRT_PI = math.sqrt(math.pi)


def _activation(name: str, a: np.ndarray):
    """(sigma(a), sigma'(a), sigma''(a))."""
    if name == "relu":
        return np.maximum(a, 0.0), (a > 0).astype(float), np.zeros_like(a)
    if name == "tanh":
        h = np.tanh(a)
        d = 1.0 - h * h
        return h, d, -2.0 * h * d
    if name == "sigmoid":
        h = 0.5 * (1.0 + np.tanh(0.5 * a))
        d = h * (1.0 - h)
        return h, d, d * (1.0 - 2.0 * h)
    if name == "erf":
        d = 2.0 / _SQRT_PI * np.exp(-a * a)
        return erf(a), d, -2.0 * a * d
    if name == "softplus":
        s = 0.5 * (1.0 + np.tanh(0.5 * a))
        return np.logaddexp(0.0, a), s, s * (1.0 - s)
    if name == "linear":
        return a, np.ones_like(a), np.zeros_like(a)
    raise ValueError(f"unknown activation {name!r}")


def _blocks(arch, theta):
    """[(W, b or None)] per layer, hidden layers first, the output layer last."""
    p = arch.unpack(np.asarray(theta, dtype=np.float64))
    names = [f"W{l + 1}" for l in range(arch.depth)] + ["Wout"]
    return [(p[w], p.get("b" + w[1:])) for w in names]


def forward_pass(arch, theta, x):
    """(layer blocks, activations h_0..h_L, sigma' and sigma'' of every hidden layer, shifted logits,
    softmax) of the rows of x: the forward pass every NumPy derivative here starts from."""
    layers = _blocks(arch, theta)
    hs, pres, slopes, curvatures = [np.asarray(x, dtype=np.float64)], [], [], []
    for W, b in layers[:-1]:
        a = hs[-1] @ W + (0.0 if b is None else b)
        h, d, dd = _activation(arch.model.activation, a)
        pres.append(a)
        hs.append(h)
        slopes.append(d)
        curvatures.append(dd)
    W, b = layers[-1]
    z = hs[-1] @ W + (0.0 if b is None else b)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return layers, hs, slopes, curvatures, z, p


def loss_and_gradient(arch, theta, x, labels) -> tuple[float, np.ndarray]:
    """The training loss mean_n l(x_n, y_n) (softmax cross-entropy) and its gradient [n_params]."""
    layers, hs, slopes, _, z, p = forward_pass(arch, theta, x)
    n = x.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    loss = float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(n), labels]))
    delta = p.copy()
    delta[np.arange(n), labels] -= 1.0
    delta /= n
    grads = []
    for l in range(len(layers) - 1, -1, -1):
        W, b = layers[l]
        grads.append((hs[l].T @ delta, None if b is None else delta.sum(axis=0)))
        if l > 0:
            delta = (delta @ W.T) * slopes[l - 1]
    return loss, _pack(arch, grads[::-1])


def _pack(arch, blocks) -> np.ndarray:
    out = np.empty(arch.n_params)
    view = arch.unpack(out)
    names = [f"{l + 1}" for l in range(arch.depth)] + ["out"]
    for name, (gw, gb) in zip(names, blocks):
        view["W" + name][...] = gw
        if gb is not None:
            view["b" + name][...] = gb
    return out


def hessian_vector(arch, theta, x, labels, v) -> np.ndarray:
    """H v [n_params], H the Hessian of the training loss at theta (module docstring)."""
    layers, hs, slopes, curvatures, _, p = forward_pass(arch, theta, x)
    dirs = _blocks(arch, v)
    n = x.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    # forward R-pass
    r_h, r_pre = [np.zeros_like(hs[0])], []
    for l, ((W, _), (V, vb)) in enumerate(zip(layers[:-1], dirs[:-1])):
        r_a = r_h[-1] @ W + hs[l] @ V + (0.0 if vb is None else vb)
        r_pre.append(r_a)
        r_h.append(slopes[l] * r_a)
    (W, _), (V, vb) = layers[-1], dirs[-1]
    r_z = r_h[-1] @ W + hs[-1] @ V + (0.0 if vb is None else vb)
    r_delta = p * (r_z - np.sum(p * r_z, axis=1, keepdims=True)) / n
    delta = p.copy()
    delta[np.arange(n), labels] -= 1.0
    delta /= n
    # backward pass and its R-pass, the output layer first
    out = []
    for l in range(len(layers) - 1, -1, -1):
        (W, b), (V, _) = layers[l], dirs[l]
        out.append((r_h[l].T @ delta + hs[l].T @ r_delta, None if b is None else r_delta.sum(axis=0)))
        if l > 0:
            back = delta @ W.T
            r_back = r_delta @ W.T + delta @ V.T
            r_delta = r_back * slopes[l - 1] + back * curvatures[l - 1] * r_pre[l - 1]
            delta = back * slopes[l - 1]
    return _pack(arch, out[::-1])


def top_eigenvalue(arch, theta, x, labels, *, iterations: int = 200, tol: float = 1e-6, seed: int = 0) -> float:
    """The largest-magnitude eigenvalue of the training loss's Hessian at theta (its sharpness near a
    minimum, where it is the largest one), by power iteration on exact products: stops when the
    Rayleigh quotient changes by less than ``tol`` relative, or after ``iterations``."""
    v = np.random.default_rng(seed).standard_normal(arch.n_params)
    v /= np.linalg.norm(v)
    value = 0.0
    for _ in range(iterations):
        hv = hessian_vector(arch, theta, x, labels, v)
        new = float(v @ hv)
        norm = np.linalg.norm(hv)
        if norm == 0.0:
            return 0.0
        v = hv / norm
        if abs(new - value) <= tol * abs(new):
            return new
        value = new
    return value
