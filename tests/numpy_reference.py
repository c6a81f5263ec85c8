"""An independent NumPy implementation of the simple network, for tests.

It shares no code with dynsim's kernels: parameters are unpacked by parsing the ``param_layout``
string a file carries (so the documented layout itself is tested), and gradients are written out
by hand in vectorised NumPy.
"""
import numpy as np
from scipy.special import erf, expit

ACTIVATION = {
    "linear": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(float)),
    "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2),
    "sigmoid": (expit, lambda z: expit(z) * (1.0 - expit(z))),
    "erf": (erf, lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-z * z)),
    "softplus": (lambda z: np.logaddexp(0.0, z), expit),
}


def _layout(model_attrs):
    """[(name, dim names)] from a layout string such as 'W:input_dim,width;b:width;a:width'."""
    return [(item.split(":")[0], tuple(item.split(":")[1].split(",")))
            for item in str(model_attrs["param_layout"]).split(";")]


def unpack(theta, model_attrs):
    """Blocks W [N, D] (W[i, d]: input d to unit i), b [N] or None, a [N], c or None, per the layout."""
    sizes = {"width": int(model_attrs["width"]), "input_dim": int(model_attrs["input_dim"]), "1": 1}
    blocks, pos = {}, 0
    for name, dims in _layout(model_attrs):
        shape = tuple(sizes[d] for d in dims)
        n = int(np.prod(shape))
        blocks[name] = theta[pos:pos + n].reshape(shape)
        if name == "W" and dims == ("input_dim", "width"):
            blocks[name] = blocks[name].T
        pos += n
    assert pos == theta.size, "layout does not cover the parameter vector"
    return blocks["W"], blocks.get("b"), blocks["a"], (blocks["c"][0] if "c" in blocks else None)


def forward_and_gradients(theta, x, model_attrs):
    """f(x_k) [K] and d f(x_k)/d theta [K, n_params], in the layout's order."""
    W, b, a, c = unpack(theta, model_attrs)
    act, dact = ACTIVATION[str(model_attrs["activation"])]
    s = float(model_attrs["output_scale"])
    pre = x @ W.T + (b if b is not None else 0.0)       # [K, N]
    h, hp = act(pre), dact(pre)
    f = s * h @ a + (c if c is not None else 0.0)
    k = x.shape[0]
    grad_w = (s * a * hp)[:, :, None] * x[:, None, :]          # [K, N, D]
    blocks = {"b": s * a * hp, "a": s * h, "c": np.ones((k, 1))}
    grads = []
    for name, dims in _layout(model_attrs):
        if name == "W":
            grads.append((grad_w.transpose(0, 2, 1) if dims == ("input_dim", "width") else grad_w).reshape(k, -1))
        else:
            grads.append(blocks[name].reshape(k, -1))
    return f, np.concatenate(grads, axis=1)


def loss_and_derivative(f, y, loss):
    if loss == "squared":
        return 0.5 * (f - y) ** 2, f - y
    return np.logaddexp(0.0, -y * f), -y * expit(-y * f)


def response(theta, x_probe, x_src, y_src, eta, loss, model_attrs):
    """Exact one-step response [source, probe] and its first-order form, as the engine defines them."""
    f_probe, g_probe = forward_and_gradients(theta, x_probe, model_attrs)
    f_src, g_src = forward_and_gradients(theta, x_src, model_attrs)
    _, dl = loss_and_derivative(f_src, y_src, loss)
    exact = np.empty((x_src.shape[0], x_probe.shape[0]))
    for s in range(x_src.shape[0]):
        moved = theta - eta * dl[s] * g_src[s]
        exact[s] = forward_and_gradients(moved, x_probe, model_attrs)[0] - f_probe
    linear = -eta * dl[:, None] * (g_src @ g_probe.T)
    return exact, linear
