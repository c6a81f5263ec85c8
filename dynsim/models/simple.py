"""The simple network: one hidden layer, one output (or M outputs sharing the hidden layer).

    f(x; theta) = s * sum_{i=1..N} a_i sigma(w_i . x + b_i) + c
    f_m(x; theta) = s * sum_i a_{m,i} sigma(w_i . x + b_i) + c_m,   m = 1..M   (``outputs = M > 1``)

with s = 1 ("standard" scaling, a_i ~ N(0, sigma_a^2 / N)) or s = 1/sqrt(N) ("ntk" scaling,
a_i ~ N(0, sigma_a^2)); both give the same output distribution at initialisation, but different
training dynamics (the NTK scaling keeps the tangent kernel O(1) as N grows). Input weights are
w_i ~ N(0, sigma_w^2 / D), hidden biases b_i ~ N(0, sigma_b^2), the output bias c starts at 0.

Parameters of one replica live in one flat float64 vector; ``SimpleNet.layout`` defines the
packing once (C order), and ``param_layout`` writes it as a string into every HDF5 file.
"""
import dataclasses
import math

import numpy as np
from numba import njit

from .. import simd
from ..rng import STREAM_INIT, normal_at_outlined
from ..spec import Section, option
from .activations import ACTIVATIONS, LANE_ACTIVATIONS, activate_lanes, activate_layer, derivative_lanes, derivative_layer

# Positions in the packed integer description ``model_ints`` that the kernels take.
MI_ACTIVATION, MI_INPUT_DIM, MI_WIDTH, MI_OFF_B, MI_OFF_A, MI_OFF_C, MI_DIM, MI_OUTPUTS = range(8)
# Positions in ``model_floats``.
MF_OUTPUT_SCALE, MF_STD_W, MF_STD_B, MF_STD_A = range(4)


@dataclasses.dataclass(frozen=True)
class SimpleNet(Section):
    SECTION = "model"
    kind: str = option("simple", "str", "network family", choices=("simple",))
    input_dim: int = option(1, "int", "input dimension D", minimum=1, maximum=100_000)
    width: int = option(32, "int", "hidden units N", minimum=1, maximum=1_000_000)
    activation: str = option("tanh", "str", "hidden activation", choices=tuple(ACTIVATIONS))
    scaling: str = option("standard", "str", "output scaling: 'standard' (factor 1) or 'ntk' (factor 1/sqrt(N))",
                          choices=("standard", "ntk"))
    hidden_bias: bool = option(True, "bool", "hidden biases b_i are parameters")
    output_bias: bool = option(False, "bool", "output bias c is a parameter")
    weight_std: float = option(1.0, "float", "sigma_w: input weights ~ N(0, sigma_w^2 / D)", minimum=0.0)
    bias_std: float = option(0.0, "float", "sigma_b: hidden biases ~ N(0, sigma_b^2)", minimum=0.0)
    output_std: float = option(1.0, "float", "sigma_a: output weights ~ N(0, sigma_a^2 / N) standard, N(0, sigma_a^2) ntk",
                               minimum=0.0)
    outputs: int = option(1, "int", "M: outputs sharing the hidden layer (M > 1: the M-region encoding task, "
                                    "one-hot targets, CPU discrete trainers in float64)", minimum=1, maximum=4096)

    @property
    def output_scale(self) -> float:
        """The factor s in front of the sum over hidden units."""
        return 1.0 / math.sqrt(self.width) if self.scaling == "ntk" else 1.0

    @property
    def layout(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """(name, shape) of each parameter block in the flat vector, in order."""
        # W is stored transposed, [input_dim, width], so that every loop over hidden units is
        # contiguous in memory and vectorises; ``unpack`` still returns it as W[i, d].
        blocks = [("W", (self.input_dim, self.width))]
        if self.hidden_bias:
            blocks.append(("b", (self.width,)))
        blocks.append(("a", (self.width,) if self.outputs == 1 else (self.outputs, self.width)))
        if self.output_bias:
            blocks.append(("c", (self.outputs,)))
        return tuple(blocks)

    @property
    def param_layout(self) -> str:
        """The layout as written to HDF5, e.g. ``W:input_dim,width;b:width;a:width`` (C order;
        ``a:outputs,width;c:outputs`` with M > 1 outputs)."""
        multi = self.outputs > 1
        dims = {"W": "input_dim,width", "b": "width", "a": "outputs,width" if multi else "width",
                "c": "outputs" if multi else "1"}
        parts = [f"{name}:{dims[name]}" for name, _ in self.layout]
        return ";".join(parts)

    def offsets(self) -> dict[str, int]:
        out, pos = {}, 0
        for name, shape in self.layout:
            out[name] = pos
            pos += int(np.prod(shape))
        out["dim"] = pos
        return out

    @property
    def n_params(self) -> int:
        return self.offsets()["dim"]

    def unpack(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Views of the blocks of one flat parameter vector (or a [..., dim] array).

        ``W`` comes back as [..., width, input_dim] (W[i, d]: from input d to hidden unit i),
        whatever the storage order; writing into the views writes the parameters.
        """
        off = self.offsets()
        out = {}
        for name, shape in self.layout:
            block = theta[..., off[name]:off[name] + int(np.prod(shape))].reshape(theta.shape[:-1] + shape)
            out[name] = np.swapaxes(block, -1, -2) if name == "W" else block
        return out

    def kernel_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The plain arrays the compiled kernels take: (model_ints, model_floats)."""
        off = self.offsets()
        ints = np.array([ACTIVATIONS[self.activation], self.input_dim, self.width, off.get("b", -1),
                         off["a"], off.get("c", -1), off["dim"], self.outputs], dtype=np.int64)
        a_std = self.output_std if self.scaling == "ntk" else self.output_std / math.sqrt(self.width)
        floats = np.array([self.output_scale, self.weight_std / math.sqrt(self.input_dim), self.bias_std, a_std],
                          dtype=np.float64)
        return ints, floats

    def attributes(self) -> dict:
        """The ``/model`` attributes that let a file describe its model without dynsim."""
        return dict(kind=self.kind, activation=self.activation, input_dim=self.input_dim, width=self.width,
                    outputs=self.outputs,
                    output_scale=self.output_scale, scaling=self.scaling, param_layout=self.param_layout,
                    n_params=self.n_params, hidden_bias=self.hidden_bias, output_bias=self.output_bias,
                    weight_std=self.weight_std, bias_std=self.bias_std, output_std=self.output_std,
                    formula="f(x) = output_scale * sum_i a_i act(sum_d W[d,i] x_d + b_i) + c, W stored [input_dim, width]"
                            + ("; output m: a[m, i], c[m]" if self.outputs > 1 else ""))

    def outputs_of(self, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
        """f(x_k; theta) for every row x_k of ``x`` [K, D] (one parameter vector; first output).
        All M outputs: ``dynsim.models.multi.evaluate_outputs`` (that module builds on this one)."""
        ints, floats = self.kernel_arrays()
        out = np.empty(x.shape[0])
        _outputs(np.ascontiguousarray(theta, dtype=np.float64), np.ascontiguousarray(x, dtype=np.float64),
                 ints, floats, out)
        return out

    def init_params(self, seed: int, replicas: int, dtype=np.float64) -> np.ndarray:
        """Initial parameters [replicas, n_params], replica r from the counter stream (seed, r).

        Drawn in float64 and rounded once to ``dtype`` (float32 runs start from the float64 draws
        rounded), written straight into the result so that no float64 copy of a large ensemble exists.
        """
        ints, floats = self.kernel_arrays()
        out = np.empty((replicas, self.n_params), dtype=dtype)
        _init_params(np.uint64(seed), ints, floats, out)
        return out


@njit(cache=True, error_model="numpy", inline="always")
def forward(theta, x, mi, mf, z, h):
    """f(x; theta); fills the pre-activations z[N] and hidden activations h[N].

    Every loop runs over hidden units with unit stride (W is stored [input_dim, width]) and the
    activation is applied in a separate loop, so that the compiler vectorises all of them.
    """
    width, off_a, off_c = mi[MI_WIDTH], mi[MI_OFF_A], mi[MI_OFF_C]
    hidden_layer(theta, x, mi, z, h)
    f = mf[MF_OUTPUT_SCALE] * _output_sum(theta, off_a, h, width)
    if off_c >= 0:
        f += theta[off_c]
    return f


@njit(cache=True, error_model="numpy", inline="always")
def hidden_layer(theta, x, mi, z, h):
    """Pre-activations z[N] and hidden activations h[N] of input x (shared by every output)."""
    act, n_in, width, off_b = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_B]
    if off_b >= 0:
        for i in range(width):
            z[i] = theta[off_b + i]
    else:
        for i in range(width):
            z[i] = 0.0
    for d in range(n_in):
        xd = x[d]
        row = d * width
        for i in range(width):
            z[i] += theta[row + i] * xd
    activate_layer(z, h, width, act)


@njit(cache=True, error_model="numpy", inline="always")
def output_sum(theta, off_a, h, width):
    """sum_i a_i h_i for the output weights starting at off_a (see ``_output_sum``)."""
    return _output_sum(theta, off_a, h, width)


@njit(cache=True, error_model="numpy", inline="always")
def _output_sum(theta, off_a, h, width):
    """sum_i a_i h_i as four partial sums over i mod 4, added as (s0 + s1) + (s2 + s3), then the tail.

    One serial chain of N dependent additions was the slowest part of a wide layer's forward pass
    (N = 1024: about 4,000 cycles of add latency per replica-step); four chains run in parallel
    and vectorise. The order is fixed, so every backend computes the same bits. Accumulated in
    float64 also for float32 parameters.
    """
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    n4 = width - width % 4
    for i in range(0, n4, 4):
        s0 += theta[off_a + i] * h[i]
        s1 += theta[off_a + i + 1] * h[i + 1]
        s2 += theta[off_a + i + 2] * h[i + 2]
        s3 += theta[off_a + i + 3] * h[i + 3]
    acc = (s0 + s1) + (s2 + s3)
    for i in range(n4, width):
        acc += theta[off_a + i] * h[i]
    return acc


@njit(cache=True, error_model="numpy", inline="always")
def add_gradient(theta, x, mi, mf, z, h, coef, g):
    """g += coef * d f(x; theta) / d theta, using z, h from ``forward`` at the same (theta, x).

    Overwrites z with the back-propagated pre-activation gradient (z is scratch after forward).
    """
    act, n_in, width = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH]
    off_b, off_a, off_c = mi[MI_OFF_B], mi[MI_OFF_A], mi[MI_OFF_C]
    # scalars in the parameters' precision, so that float32 loops stay float32 (no-op for float64)
    cs = g.dtype.type(coef * mf[MF_OUTPUT_SCALE])
    derivative_layer(z, h, width, act)
    for i in range(width):
        z[i] *= cs * theta[off_a + i]
        g[off_a + i] += cs * h[i]
    for d in range(n_in):
        xd = x[d]
        row = d * width
        for i in range(width):
            g[row + i] += z[i] * xd
    if off_b >= 0:
        for i in range(width):
            g[off_b + i] += z[i]
    if off_c >= 0:
        g[off_c] += coef


@njit(cache=True, error_model="numpy", inline="always")
def descend_single_sample(theta, x, mi, mf, z, h, step_coef, decay):
    """theta <- decay * theta - step_coef * grad f(x), fused (z, h from ``forward``; z is overwritten).

    The gradient of every block is taken at the old parameters: each a_i is read for the
    back-propagated gradient before it is itself updated.
    """
    act, n_in, width = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH]
    off_b, off_a, off_c = mi[MI_OFF_B], mi[MI_OFF_A], mi[MI_OFF_C]
    # scalars in the parameters' precision, so that float32 loops stay float32 (no-op for float64)
    cs = theta.dtype.type(step_coef * mf[MF_OUTPUT_SCALE])
    decay = theta.dtype.type(decay)
    derivative_layer(z, h, width, act)
    for i in range(width):
        a_i = theta[off_a + i]
        z[i] *= cs * a_i
        theta[off_a + i] = decay * a_i - cs * h[i]
    for d in range(n_in):
        xd = x[d]
        row = d * width
        for i in range(width):
            theta[row + i] = decay * theta[row + i] - z[i] * xd
    if off_b >= 0:
        for i in range(width):
            theta[off_b + i] = decay * theta[off_b + i] - z[i]
    if off_c >= 0:
        theta[off_c] = decay * theta[off_c] - step_coef


# --- several replicas at once: one replica per SIMD lane -----------------------------------------
#
# One replica's step is a chain of dependent operations (the forward pass, the loss, the update, then
# the next step's forward pass), too long for the processor to overlap with anything: at N = 32 the
# scalar step above spends most of its time waiting. Replicas are independent, so a block of L of them
# (``simd.lane_count``: 4 float64, 8 float32) runs in the lanes of one vector, parameters interleaved
# lane-minor: ``block[j * L + l]`` is parameter j of replica l, ``xs[d * L + l]`` input d of replica
# l's sample, ``h[i * L + l]`` its hidden unit i. Every lane does the scalar step's operations in the
# scalar step's order, so each replica's trajectory is bit for bit the one of ``forward`` and
# ``descend_single_sample``.

def lanes_supported(mi) -> bool:
    """True for the one-output models the lane-blocked step serves (tanh, relu or linear units,
    N a multiple of 4: the four output partial sums are then whole vectors)."""
    return int(mi[MI_OUTPUTS]) == 1 and int(mi[MI_WIDTH]) % 4 == 0 and int(mi[MI_ACTIVATION]) in LANE_ACTIVATIONS


@njit(cache=True, error_model="numpy", inline="always")
def forward_lanes(block, xs, h, mi, mf):
    """The output (without the output bias) of every lane's replica at its input, as a float64 vector;
    fills h with the hidden activations. ``forward`` for a block of replicas."""
    lanes = simd.lane_count(block)
    act, n_in, width, off_b, off_a = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_B], mi[MI_OFF_A]
    # eight hidden units at a time where they fit: eight independent accumulation chains over the inputs
    # (the add latency, not the multiplications, bounds four chains), then four
    i = 0
    while i + 8 <= width:
        if off_b >= 0:
            k = (off_b + i) * lanes
            z0, z1 = simd.load(block, k), simd.load(block, k + lanes)
            z2, z3 = simd.load(block, k + 2 * lanes), simd.load(block, k + 3 * lanes)
            z4, z5 = simd.load(block, k + 4 * lanes), simd.load(block, k + 5 * lanes)
            z6, z7 = simd.load(block, k + 6 * lanes), simd.load(block, k + 7 * lanes)
        else:
            z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = simd.zeros(block)
        for d in range(n_in):
            xd = simd.load(xs, d * lanes)
            row = (d * width + i) * lanes
            z0 = z0 + simd.load(block, row) * xd
            z1 = z1 + simd.load(block, row + lanes) * xd
            z2 = z2 + simd.load(block, row + 2 * lanes) * xd
            z3 = z3 + simd.load(block, row + 3 * lanes) * xd
            z4 = z4 + simd.load(block, row + 4 * lanes) * xd
            z5 = z5 + simd.load(block, row + 5 * lanes) * xd
            z6 = z6 + simd.load(block, row + 6 * lanes) * xd
            z7 = z7 + simd.load(block, row + 7 * lanes) * xd
        simd.store(h, i * lanes, z0)
        simd.store(h, (i + 1) * lanes, z1)
        simd.store(h, (i + 2) * lanes, z2)
        simd.store(h, (i + 3) * lanes, z3)
        simd.store(h, (i + 4) * lanes, z4)
        simd.store(h, (i + 5) * lanes, z5)
        simd.store(h, (i + 6) * lanes, z6)
        simd.store(h, (i + 7) * lanes, z7)
        i += 8
    while i < width:
        if off_b >= 0:
            z0 = simd.load(block, (off_b + i) * lanes)
            z1 = simd.load(block, (off_b + i + 1) * lanes)
            z2 = simd.load(block, (off_b + i + 2) * lanes)
            z3 = simd.load(block, (off_b + i + 3) * lanes)
        else:
            z0 = z1 = z2 = z3 = simd.zeros(block)
        for d in range(n_in):
            xd = simd.load(xs, d * lanes)
            row = (d * width + i) * lanes
            z0 = z0 + simd.load(block, row) * xd
            z1 = z1 + simd.load(block, row + lanes) * xd
            z2 = z2 + simd.load(block, row + 2 * lanes) * xd
            z3 = z3 + simd.load(block, row + 3 * lanes) * xd
        simd.store(h, i * lanes, z0)
        simd.store(h, (i + 1) * lanes, z1)
        simd.store(h, (i + 2) * lanes, z2)
        simd.store(h, (i + 3) * lanes, z3)
        i += 4
    # the activation in double-width vectors: a tanh is a long dependency chain, and twice the values
    # per instruction keep twice as many of them in flight (1.3x on W1)
    for k in range(0, width * lanes, 2 * lanes):
        simd.store(h, k, activate_lanes(simd.load_wide(h, k), act))
    # the scalar code's four partial sums over i mod 4, each lane's own, in float64
    acc0 = acc1 = acc2 = acc3 = simd.widen(simd.zeros(block))
    for i in range(0, width, 4):
        acc0 = acc0 + simd.widen(simd.load(block, (off_a + i) * lanes) * simd.load(h, i * lanes))
        acc1 = acc1 + simd.widen(simd.load(block, (off_a + i + 1) * lanes) * simd.load(h, (i + 1) * lanes))
        acc2 = acc2 + simd.widen(simd.load(block, (off_a + i + 2) * lanes) * simd.load(h, (i + 2) * lanes))
        acc3 = acc3 + simd.widen(simd.load(block, (off_a + i + 3) * lanes) * simd.load(h, (i + 3) * lanes))
    return simd.splat(mf[MF_OUTPUT_SCALE], acc0) * ((acc0 + acc1) + (acc2 + acc3))


@njit(cache=True, error_model="numpy", inline="always")
def descend_lanes(block, xs, h, mi, cs, decay):
    """``descend_single_sample`` for a block of replicas: cs holds each lane's step_coef * output scale in
    the parameters' precision; the output bias (a scalar per lane) is left to the caller."""
    # 1 * theta is theta bit for bit: without weight decay the products are left out, in a loop of
    # their own (a select between the two forms inside one loop computed both: 7 % slower)
    if decay == 1.0:
        _descend_lanes(block, xs, h, mi, cs, decay, False)
    else:
        _descend_lanes(block, xs, h, mi, cs, decay, True)


@njit(cache=True, error_model="numpy", inline="always")
def _descend_lanes(block, xs, h, mi, cs, decay, decays):
    # four hidden units at a time, so that each input vector is loaded once for four units: the stores
    # into block may alias xs for all LLVM knows, so it reloads xs after every store (loads, not
    # multiplications, bound this loop). Each parameter still moves once, by its old value's step.
    lanes = simd.lane_count(block)
    act, n_in, width, off_b, off_a = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_B], mi[MI_OFF_A]
    dv = simd.splat(decay, cs)
    for i in range(0, width, 4):
        k = (off_a + i) * lanes
        h0, h1 = simd.load(h, i * lanes), simd.load(h, (i + 1) * lanes)
        h2, h3 = simd.load(h, (i + 2) * lanes), simd.load(h, (i + 3) * lanes)
        a0, a1 = simd.load(block, k), simd.load(block, k + lanes)
        a2, a3 = simd.load(block, k + 2 * lanes), simd.load(block, k + 3 * lanes)
        g0 = derivative_lanes(h0, act) * (cs * a0)
        g1 = derivative_lanes(h1, act) * (cs * a1)
        g2 = derivative_lanes(h2, act) * (cs * a2)
        g3 = derivative_lanes(h3, act) * (cs * a3)
        simd.store(block, k, (dv * a0 if decays else a0) - cs * h0)
        simd.store(block, k + lanes, (dv * a1 if decays else a1) - cs * h1)
        simd.store(block, k + 2 * lanes, (dv * a2 if decays else a2) - cs * h2)
        simd.store(block, k + 3 * lanes, (dv * a3 if decays else a3) - cs * h3)
        for d in range(n_in):
            xd = simd.load(xs, d * lanes)
            k = (d * width + i) * lanes
            w0, w1 = simd.load(block, k), simd.load(block, k + lanes)
            w2, w3 = simd.load(block, k + 2 * lanes), simd.load(block, k + 3 * lanes)
            simd.store(block, k, (dv * w0 if decays else w0) - g0 * xd)
            simd.store(block, k + lanes, (dv * w1 if decays else w1) - g1 * xd)
            simd.store(block, k + 2 * lanes, (dv * w2 if decays else w2) - g2 * xd)
            simd.store(block, k + 3 * lanes, (dv * w3 if decays else w3) - g3 * xd)
        if off_b >= 0:
            k = (off_b + i) * lanes
            b0, b1 = simd.load(block, k), simd.load(block, k + lanes)
            b2, b3 = simd.load(block, k + 2 * lanes), simd.load(block, k + 3 * lanes)
            simd.store(block, k, (dv * b0 if decays else b0) - g0)
            simd.store(block, k + lanes, (dv * b1 if decays else b1) - g1)
            simd.store(block, k + 2 * lanes, (dv * b2 if decays else b2) - g2)
            simd.store(block, k + 3 * lanes, (dv * b3 if decays else b3) - g3)


@njit(cache=True, error_model="numpy", inline="always")
def add_gradient_lanes(block, xs, h, mi, cs, grad):
    """``add_gradient`` for a block of replicas: grad (same layout as block) += each lane's coef * grad f,
    cs holding coef * output scale per lane in the parameters' precision; the output bias is the caller's."""
    lanes = simd.lane_count(block)
    act, n_in, width, off_b, off_a = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_B], mi[MI_OFF_A]
    for i in range(width):
        hi = simd.load(h, i * lanes)
        k = (off_a + i) * lanes
        g = derivative_lanes(hi, act) * (cs * simd.load(block, k))
        simd.store(grad, k, simd.load(grad, k) + cs * hi)
        for d in range(n_in):
            k = (d * width + i) * lanes
            simd.store(grad, k, simd.load(grad, k) + g * simd.load(xs, d * lanes))
        if off_b >= 0:
            k = (off_b + i) * lanes
            simd.store(grad, k, simd.load(grad, k) + g)


@njit(cache=True, error_model="numpy", inline="always")
def add_gradient_pair_lanes(block, xs, h, cs, xs2, h2, cs2, mi, grad):
    """``add_gradient_lanes`` of two samples (xs, h, cs, then xs2, h2, cs2) in one pass: each element of
    grad gets the first sample's term, then the second's, as in two calls, with one load and store.
    Four hidden units at a time, each input vector loaded once for the four (see ``_descend_lanes``)."""
    lanes = simd.lane_count(block)
    act, n_in, width, off_b, off_a = mi[MI_ACTIVATION], mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_B], mi[MI_OFF_A]
    for i in range(0, width, 4):
        ka = (off_a + i) * lanes
        p0, p1 = simd.load(h, i * lanes), simd.load(h, (i + 1) * lanes)
        p2, p3 = simd.load(h, (i + 2) * lanes), simd.load(h, (i + 3) * lanes)
        q0, q1 = simd.load(h2, i * lanes), simd.load(h2, (i + 1) * lanes)
        q2, q3 = simd.load(h2, (i + 2) * lanes), simd.load(h2, (i + 3) * lanes)
        a0, a1 = simd.load(block, ka), simd.load(block, ka + lanes)
        a2, a3 = simd.load(block, ka + 2 * lanes), simd.load(block, ka + 3 * lanes)
        g0, e0 = derivative_lanes(p0, act) * (cs * a0), derivative_lanes(q0, act) * (cs2 * a0)
        g1, e1 = derivative_lanes(p1, act) * (cs * a1), derivative_lanes(q1, act) * (cs2 * a1)
        g2, e2 = derivative_lanes(p2, act) * (cs * a2), derivative_lanes(q2, act) * (cs2 * a2)
        g3, e3 = derivative_lanes(p3, act) * (cs * a3), derivative_lanes(q3, act) * (cs2 * a3)
        simd.store(grad, ka, (simd.load(grad, ka) + cs * p0) + cs2 * q0)
        simd.store(grad, ka + lanes, (simd.load(grad, ka + lanes) + cs * p1) + cs2 * q1)
        simd.store(grad, ka + 2 * lanes, (simd.load(grad, ka + 2 * lanes) + cs * p2) + cs2 * q2)
        simd.store(grad, ka + 3 * lanes, (simd.load(grad, ka + 3 * lanes) + cs * p3) + cs2 * q3)
        for d in range(n_in):
            x1, x2 = simd.load(xs, d * lanes), simd.load(xs2, d * lanes)
            k = (d * width + i) * lanes
            simd.store(grad, k, (simd.load(grad, k) + g0 * x1) + e0 * x2)
            simd.store(grad, k + lanes, (simd.load(grad, k + lanes) + g1 * x1) + e1 * x2)
            simd.store(grad, k + 2 * lanes, (simd.load(grad, k + 2 * lanes) + g2 * x1) + e2 * x2)
            simd.store(grad, k + 3 * lanes, (simd.load(grad, k + 3 * lanes) + g3 * x1) + e3 * x2)
        if off_b >= 0:
            k = (off_b + i) * lanes
            simd.store(grad, k, (simd.load(grad, k) + g0) + e0)
            simd.store(grad, k + lanes, (simd.load(grad, k + lanes) + g1) + e1)
            simd.store(grad, k + 2 * lanes, (simd.load(grad, k + 2 * lanes) + g2) + e2)
            simd.store(grad, k + 3 * lanes, (simd.load(grad, k + 3 * lanes) + g3) + e3)


# Record-time code (observables, the NTK and response, fragility searches, evaluation) calls these
# compiled-once copies instead of inlining the forward pass at each of its call sites: the per-step
# path needs the inlining for speed, everywhere else it only multiplied the cold compile time.
@njit(cache=True, error_model="numpy")
def forward_outlined(theta, x, mi, mf, z, h):
    """``forward`` as a called function (for code that runs at record times)."""
    return forward(theta, x, mi, mf, z, h)


@njit(cache=True, error_model="numpy")
def add_gradient_outlined(theta, x, mi, mf, z, h, coef, g):
    """``add_gradient`` as a called function (for code that runs at record times)."""
    add_gradient(theta, x, mi, mf, z, h, coef, g)


@njit(cache=True, error_model="numpy")
def _outputs(theta, x, mi, mf, out):
    z = np.empty(mi[MI_WIDTH])
    h = np.empty(mi[MI_WIDTH])
    for k in range(x.shape[0]):
        out[k] = forward_outlined(theta, x[k], mi, mf, z, h)


@njit(cache=True, error_model="numpy")
def _init_params(seed, mi, mf, out):
    n_in, width, off_b, off_a, off_c = mi[MI_INPUT_DIM], mi[MI_WIDTH], mi[MI_OFF_B], mi[MI_OFF_A], mi[MI_OFF_C]
    n_out = mi[MI_OUTPUTS]
    for r in range(out.shape[0]):
        theta = out[r]
        for k in range(width * n_in):
            theta[k] = mf[MF_STD_W] * normal_at_outlined(seed, r, STREAM_INIT, 0, k)
        for i in range(width):
            if off_b >= 0:
                theta[off_b + i] = mf[MF_STD_B] * normal_at_outlined(seed, r, STREAM_INIT, 1, i)
        # a[m, i] is draw m * width + i: output 0 draws what the one-output network draws
        for k in range(n_out * width):
            theta[off_a + k] = mf[MF_STD_A] * normal_at_outlined(seed, r, STREAM_INIT, 2, k)
        if off_c >= 0:
            for m in range(n_out):
                theta[off_c + m] = 0.0
