"""Deep multilayer perceptrons: L hidden layers, K softmax outputs (``[model] kind = "mlp"``).

    h_0 = x,   h_l = sigma(h_{l-1} W_l + b_l)  (l = 1..L),   logits = h_L W_out + b_out,
    l(x, y) = log sum_k exp(logits_k) - logits_y          (softmax cross-entropy, y in 0..K-1)

Each W_l is stored [fan_in, fan_out] (C order), as the simple network stores its input weights,
so that the forward pass runs unit-stride over the units of a layer and vectorises. Layer widths
are ``width`` for every hidden layer, or the list ``widths``. Initialisation, per layer:

* ``he``:      W ~ N(0, 2 / fan_in)            (variance-preserving for relu)
* ``xavier``:  W ~ N(0, 2 / (fan_in + fan_out))
* ``custom``:  W ~ N(0, weight_var / fan_in)    (sigma_w^2 of the mean-field / edge-of-chaos literature)

biases ~ N(0, bias_std^2) when ``bias`` is on. The output layer is initialised like the hidden ones.

Compiled pieces (plain ``njit`` functions called by the trainers and the measurement kernels,
not inlined into them: a depth-generic body is large, and one compiled copy keeps compile time
down). Every kernel takes the layer table ``layers`` [n_layers, 6] whose rows are (fan_in,
fan_out, offset of W, offset of b or -1, offset of the layer's input units, offset of its output
units) in the unit buffers ``pre`` / ``post`` / ``delta`` of one sample, which hold the input
(units 0..D-1), every hidden layer, then the K logits. A replica's workspace is these three
buffers (sum of widths + D + K each) plus K class probabilities and one gradient accumulator of
n_params: samples of a batch are processed one at a time, so nothing grows with the batch (depth
100 x width 256 on the digits: 0.6 MiB of unit buffers, and 6.6 M parameters).
"""
import dataclasses
import math

import numpy as np
from numba import njit

from ..rng import STREAM_INIT, fill_normals
from ..spec import ConfigError, Section, option
from .activations import ACTIVATIONS, activate_layer, derivative_from_value

# Columns of the layer table.
L_FAN_IN, L_FAN_OUT, L_W, L_B, L_IN, L_OUT = range(6)
INITS = ("he", "xavier", "custom")
MAX_DEPTH = 100


@dataclasses.dataclass(frozen=True)
class DeepMLP(Section):
    SECTION = "model"
    kind: str = option("mlp", "str", "network family", choices=("mlp",))
    input_dim: int = option(None, "int", "input dimension D (default: the task's: 16 for gaussian_mixture, teacher "
                                         "and parity; fixed by digits (64), mnist1d (40) and modular_addition "
                                         "(2 * modulus))", minimum=1, maximum=1_000_000, optional=True)
    depth: int = option(3, "int", "hidden layers L", minimum=1, maximum=MAX_DEPTH)
    width: int = option(64, "int", "units per hidden layer (unless widths is given)", minimum=1, maximum=65_536)
    widths: tuple = option(None, "int_list", "units of each hidden layer, one entry per layer (overrides width)",
                           optional=True)
    activation: str = option("relu", "str", "hidden activation", choices=tuple(ACTIVATIONS))
    init: str = option("he", "str", "weight initialisation: he N(0, 2/fan_in), xavier N(0, 2/(fan_in+fan_out)), "
                                    "custom N(0, weight_var/fan_in)", choices=INITS)
    weight_var: float = option(2.0, "float", "custom init: sigma_w^2 in W ~ N(0, sigma_w^2 / fan_in)", minimum=0.0)
    bias: bool = option(True, "bool", "every layer has a bias vector")
    bias_std: float = option(0.0, "float", "biases ~ N(0, bias_std^2) at initialisation", minimum=0.0)

    def check(self):
        if self.widths is not None:
            if len(self.widths) != self.depth:
                self.fail("widths", f"got {len(self.widths)} entries for model.depth = {self.depth}; give one width "
                                    "per hidden layer, or remove widths and set width")
            if any(w < 1 or w > 65_536 for w in self.widths):
                self.fail("widths", f"got {list(self.widths)}; every width must be in 1..65536")
        if self.init != "custom" and self.weight_var != 2.0:
            self.fail("weight_var", f"got {self.weight_var}; only init = 'custom' uses it: set model.init = "
                                    "'custom' or remove weight_var")
        if not self.bias and self.bias_std != 0.0:
            self.fail("bias_std", f"got {self.bias_std} with model.bias = false: remove bias_std or set bias = true")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return tuple(self.widths) if self.widths is not None else (self.width,) * self.depth

    def architecture(self, input_dim: int, classes: int) -> "DeepArchitecture":
        """The network on inputs of dimension D with K classes (``DeepConfig.input_dim``, ``task.n_classes``)."""
        if input_dim < 1:
            raise ConfigError("model.input_dim", f"got {input_dim}; must be >= 1")
        if classes < 2:
            raise ConfigError("task.classes", f"got {classes}; softmax classification needs >= 2 classes")
        return DeepArchitecture(self, int(input_dim), int(classes))


@dataclasses.dataclass(frozen=True)
class DeepArchitecture:
    """A ``DeepMLP`` with its input dimension and class count: layout, kernel arrays, initialisation."""
    model: DeepMLP
    input_dim: int
    classes: int

    @property
    def sizes(self) -> tuple[int, ...]:
        """Units of every layer, input first and logits last: (D, n_1, ..., n_L, K)."""
        return (self.input_dim,) + self.model.hidden_widths + (self.classes,)

    @property
    def depth(self) -> int:
        return self.model.depth

    @property
    def layout(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(name, shape) of each block of the flat parameter vector: W1, b1, ..., W_out, b_out."""
        sizes, blocks = self.sizes, []
        for l in range(len(sizes) - 1):
            name = "out" if l == len(sizes) - 2 else str(l + 1)
            blocks.append((f"W{name}", (sizes[l], sizes[l + 1])))
            if self.model.bias:
                blocks.append((f"b{name}", (sizes[l + 1],)))
        return tuple(blocks)

    @property
    def param_layout(self) -> str:
        """The layout as written to HDF5, e.g. ``W1:64,32;b1:32;Wout:32,10;bout:10`` (C order, W [fan_in, fan_out])."""
        return ";".join(f"{name}:{','.join(map(str, shape))}" for name, shape in self.layout)

    @property
    def n_params(self) -> int:
        return sum(int(np.prod(shape)) for _, shape in self.layout)

    @property
    def n_units(self) -> int:
        """Length of a sample's unit buffers: input, hidden units and logits."""
        return sum(self.sizes)

    def layer_table(self) -> np.ndarray:
        """[n_layers, 6] int64: (fan_in, fan_out, W offset, b offset or -1, input unit offset, output unit offset)."""
        sizes = self.sizes
        table = np.empty((len(sizes) - 1, 6), dtype=np.int64)
        param, unit = 0, 0
        for l in range(len(sizes) - 1):
            fan_in, fan_out = sizes[l], sizes[l + 1]
            w_off = param
            param += fan_in * fan_out
            b_off = -1
            if self.model.bias:
                b_off = param
                param += fan_out
            table[l] = (fan_in, fan_out, w_off, b_off, unit, unit + fan_in)
            unit += fan_in
        return table

    @property
    def activation_code(self) -> int:
        return ACTIVATIONS[self.model.activation]

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Views of the blocks of a flat vector (or [..., n_params] array): W as [..., fan_in, fan_out]."""
        out, pos = {}, 0
        for name, shape in self.layout:
            size = int(np.prod(shape))
            out[name] = theta[..., pos:pos + size].reshape(theta.shape[:-1] + shape)
            pos += size
        return out

    def init_std(self) -> np.ndarray:
        """[n_params]: the standard deviation of every parameter at initialisation."""
        std = np.empty(self.n_params)
        for row in self.layer_table():
            fan_in, fan_out, w_off, b_off = (int(v) for v in row[:4])
            if self.model.init == "he":
                var = 2.0 / fan_in
            elif self.model.init == "xavier":
                var = 2.0 / (fan_in + fan_out)
            else:
                var = self.model.weight_var / fan_in
            std[w_off:w_off + fan_in * fan_out] = math.sqrt(var)
            if b_off >= 0:
                std[b_off:b_off + fan_out] = self.model.bias_std
        return std

    def init_params(self, seed: int, replicas: int) -> np.ndarray:
        """[replicas, n_params]: replica r's parameters are std * (the N(0, 1) draws of (seed, r, INIT, 0))."""
        out = np.empty((replicas, self.n_params))
        std = self.init_std()
        for r in range(replicas):
            fill_normals(np.uint64(seed), np.uint64(r), np.uint64(STREAM_INIT), np.uint64(0), out[r])
            out[r] *= std
        return out

    def logits(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """[n, K] logits of the rows of x [n, D] under one parameter vector."""
        out = np.empty((x.shape[0], self.classes))
        batch_logits(np.ascontiguousarray(theta, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float64),
                     self.layer_table(), self.activation_code, out)
        return out

    def attributes(self) -> dict:
        """The ``/model`` attributes that let a file describe its network without dynsim."""
        m = self.model
        return dict(kind="mlp", activation=m.activation, input_dim=self.input_dim,
                    widths=np.array(m.hidden_widths, dtype=np.int64), depth=m.depth, classes=self.classes,
                    outputs=self.classes, init=m.init, weight_var=m.weight_var if m.init == "custom" else np.nan,
                    bias=m.bias, bias_std=m.bias_std, param_layout=self.param_layout, n_params=self.n_params,
                    formula="h_0 = x, h_l = act(h_{l-1} W_l + b_l), logits = h_L Wout + bout; W stored "
                            "[fan_in, fan_out]; loss: softmax cross-entropy")


# -- compiled kernels -------------------------------------------------------------------------------


@njit(cache=True, error_model="numpy")
def forward(theta, x, layers, act, pre, post):
    """Forward pass of one sample: post[0:D] = x, pre/post of every layer; logits in the last layer's post."""
    for j in range(x.shape[0]):
        post[j] = x[j]
    n_layers = layers.shape[0]
    for l in range(n_layers):
        fan_in, fan_out = layers[l, L_FAN_IN], layers[l, L_FAN_OUT]
        w_off, b_off, in_off, out_off = layers[l, L_W], layers[l, L_B], layers[l, L_IN], layers[l, L_OUT]
        z = pre[out_off:out_off + fan_out]
        if b_off >= 0:
            for i in range(fan_out):
                z[i] = theta[b_off + i]
        else:
            for i in range(fan_out):
                z[i] = 0.0
        for j in range(fan_in):
            a = post[in_off + j]
            row = w_off + j * fan_out
            for i in range(fan_out):
                z[i] += theta[row + i] * a
        h = post[out_off:out_off + fan_out]
        if l < n_layers - 1:
            activate_layer(z, h, fan_out, act)
        else:
            for i in range(fan_out):
                h[i] = z[i]


@njit(cache=True, error_model="numpy")
def softmax_loss(post, out_off, classes, label, prob):
    """Softmax of the logits post[out_off:out_off+K] into prob; returns the cross-entropy for ``label``."""
    top = post[out_off]
    for k in range(1, classes):
        top = max(top, post[out_off + k])
    total = 0.0
    for k in range(classes):
        prob[k] = math.exp(post[out_off + k] - top)
        total += prob[k]
    for k in range(classes):
        prob[k] /= total
    return math.log(total) + top - post[out_off + label]


@njit(cache=True, error_model="numpy")
def predicted_class(post, out_off, classes):
    best = 0
    for k in range(1, classes):
        if post[out_off + k] > post[out_off + best]:
            best = k
    return best


@njit(cache=True, error_model="numpy")
def backward(theta, layers, act, pre, post, delta, g):
    """g += the gradient whose output-layer error delta[logits] the caller has set (scaled as it wants).

    delta of every hidden layer is overwritten on the way down.
    """
    n_layers = layers.shape[0]
    for l in range(n_layers - 1, -1, -1):
        fan_in, fan_out = layers[l, L_FAN_IN], layers[l, L_FAN_OUT]
        w_off, b_off, in_off, out_off = layers[l, L_W], layers[l, L_B], layers[l, L_IN], layers[l, L_OUT]
        d_out = delta[out_off:out_off + fan_out]
        if b_off >= 0:
            for i in range(fan_out):
                g[b_off + i] += d_out[i]
        for j in range(fan_in):
            a = post[in_off + j]
            row = w_off + j * fan_out
            for i in range(fan_out):
                g[row + i] += a * d_out[i]
        if l > 0:  # error of the layer below: (W d_out) * sigma'(z)
            for j in range(fan_in):
                row = w_off + j * fan_out
                s = 0.0
                for i in range(fan_out):
                    s += theta[row + i] * d_out[i]
                delta[in_off + j] = s * derivative_from_value(pre[in_off + j], post[in_off + j], act)


@njit(cache=True, error_model="numpy")
def sample_gradient(theta, x, label, layers, act, pre, post, delta, prob, weight, g):
    """g += weight * grad_theta l(x, label); returns the sample's loss (non-finite flags divergence)."""
    forward(theta, x, layers, act, pre, post)
    n_layers = layers.shape[0]
    out_off, classes = layers[n_layers - 1, L_OUT], layers[n_layers - 1, L_FAN_OUT]
    loss = softmax_loss(post, out_off, classes, label, prob)
    for k in range(classes):
        delta[out_off + k] = weight * prob[k]
    delta[out_off + label] -= weight
    backward(theta, layers, act, pre, post, delta, g)
    return loss


@njit(cache=True, error_model="numpy")
def batch_logits(theta, x, layers, act, out):
    """out[n, K] = logits of every row of x under one parameter vector."""
    n_layers = layers.shape[0]
    n_units = layers[n_layers - 1, L_OUT] + layers[n_layers - 1, L_FAN_OUT]
    out_off, classes = layers[n_layers - 1, L_OUT], layers[n_layers - 1, L_FAN_OUT]
    pre = np.empty(n_units)
    post = np.empty(n_units)
    for n in range(x.shape[0]):
        forward(theta, x[n], layers, act, pre, post)
        for k in range(classes):
            out[n, k] = post[out_off + k]
