"""The max-norm chain of the wormhole paper (Lai & Jin 2025): a deep linear network built without
gradients, by maximum-likelihood selection of rows, from a single training input.

For each layer l = 1..L, draw R_l, an n x k matrix of independent N(0, 1) entries (n >> k
candidate neurons), compute y = R_l x_{l-1} for the training input's current vector x_{l-1}, and
keep k rows as the layer's weights W_l:

* ``selection = "magnitude"``: the k rows with the largest |y_i| (the paper's main construction);
* ``selection = "negative"``: the k rows with the most negative y_i (the signed variant of one of
  the authors' scripts).

Rows are kept in the order of their selection score (largest |y| first; most negative first), so
a replica's network is a pure function of (seed, replica) and the training input. Every layer
keeps width k; the network is H_L = W_L ... W_1 and any other input v goes through the same H_L.
``layer_output`` post-processes every layer's output, for the training input and every probe
alike: ``linear`` (nothing), ``normalised`` (x / |x|), ``relu`` or ``softmax`` (applied after
normalising, inside the chain: each layer's selection and the next layer see the post-processed
vector; ``relu`` this way is dynsim's variant, not the authors'). ``relu_readout`` is the authors'
relu chain: the chain propagates and selects linearly, and relu is applied to the read-out only,
to H_l u and H_l v before they are compared (their chains then end at d = 0 or d = 0.25).

The kernel measures, per layer and per probe v, how H_l v relates to H_l u (u the training input):
the angular distance d = angle / pi (computed as 2 atan2(|a - b|, |a + b|) / pi on the unit vectors,
accurate also where the angle is tiny, unlike arccos of the cosine), the cosine, the fraction of
components whose signs differ, the layer's log gain log |W_l e_{l-1}| (e_{l-1} the unit vector of
the previous layer's output; for the linear chain log |H_L v| = log |v| + the sum of the gains),
and the wormhole's recovery error (see below). Only directions propagate (every layer's output is
renormalised internally), so a linear chain of any depth neither overflows nor changes its
directions. For the training input the squared gain |W_l e_{l-1}|^2 is the sum of squares of the k
selected of n independent N(0, 1) scores, in every mode (``dynsim.theory.chain`` has its mean).

Wormhole (as in the paper): with a message m and a scale alpha, c = m - alpha * H_l v / |H_l v| and
m_hat = c + alpha * H_l u / |H_l u|, computed literally in that order; the recorded error is
|m_hat - m| / |m|. Once H_l v and H_l u point the same way, m_hat = m although u and v are unrelated.

Random numbers: R_l[i, j] is the normal draw 2p or 2p + 1 of counter (seed, replica, STREAM_CHAIN,
layer l, i * ceil(k / 2) + p), p = j // 2: one Philox block gives two entries of a row, and any
row can be regenerated alone (the selected rows are regenerated rather than stored).
"""
import dataclasses
import math

import numpy as np
from numba import njit

from ..parallel import over_replicas
from ..rng import STREAM_CHAIN, normal_pair
from ..spec import Section, option

SELECTIONS = {"magnitude": 0, "negative": 1}
LAYER_OUTPUTS = {"linear": 0, "normalised": 1, "relu": 2, "softmax": 3, "relu_readout": 4}
_NEGATIVE = 1
_LINEAR, _NORMALISED, _RELU, _SOFTMAX, _RELU_READOUT = range(5)

#: Per-probe measures, in the order of the kernel's output array's last-but-one axis.
MEASURES = ("angular_distance", "cosine", "sign_distance", "log_gain", "wormhole_error", "squared_distance")


@dataclasses.dataclass(frozen=True)
class MaxNormChain(Section):
    SECTION = "model"
    kind: str = option("maxnorm_chain", "str", "network family", choices=("maxnorm_chain",))
    width: int = option(20, "int", "k: width of every layer (and the input dimension)", minimum=1,
                        maximum=100_000)
    candidates: int = option(500, "int", "n: candidate rows drawn per layer, of which k are kept", minimum=1,
                             maximum=10_000_000)
    depth: int = option(15, "int", "L: number of layers", minimum=1, maximum=10_000)
    selection: str = option("magnitude", "str", "which k rows are kept: the largest |y_i| ('magnitude') or the "
                                                "most negative y_i ('negative')", choices=tuple(SELECTIONS))
    layer_output: str = option("linear", "str", "applied to every layer's output: nothing ('linear'), x/|x| "
                                                "('normalised'), relu or softmax after normalising inside the "
                                                "chain ('relu' is dynsim's variant); 'relu_readout': the authors' "
                                                "relu, a linear chain read out through relu",
                               choices=tuple(LAYER_OUTPUTS))

    def check(self):
        if self.candidates < self.width:
            self.fail("candidates", f"got {self.candidates}; must be >= model.width ({self.width}): k rows are "
                                    "kept out of n candidates")

    def kernel_ints(self) -> np.ndarray:
        return np.array([self.width, self.candidates, self.depth, SELECTIONS[self.selection],
                         LAYER_OUTPUTS[self.layer_output]], dtype=np.int64)

    def attributes(self) -> dict:
        return dict(kind=self.kind, width=self.width, candidates=self.candidates, depth=self.depth,
                    selection=self.selection, layer_output=self.layer_output,
                    formula="x_l = post(W_l x_{l-1}), W_l = the k rows of R_l ~ N(0,1)^{n x k} with the largest "
                            "|R_l x_{l-1}| (magnitude) or most negative R_l x_{l-1} (negative), x_0 the training "
                            "input; probes v go through the same W_l")

    def weights(self, seed: int, replica: int, train_input: np.ndarray) -> np.ndarray:
        """The layers' weights W_l [depth, k, k] of one replica (for inspection and tests)."""
        out = np.empty((self.depth, self.width, self.width))
        _chain_weights(np.uint64(seed), np.int64(replica), _as_vector(train_input, self.width, "train_input"),
                       self.kernel_ints(), out)
        return out

    def candidate_matrix(self, seed: int, replica: int, layer: int) -> np.ndarray:
        """R_layer [n, k] of one replica (layer counts from 1): what the selection chooses from."""
        out = np.empty((self.candidates, self.width))
        _fill_candidates(np.uint64(seed), np.int64(replica), np.int64(layer), out)
        return out

    def measure(self, seed: int, first_replica: int, replicas: int, train_input, probes, message,
                alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """Build ``replicas`` chains (replica indices first_replica...) and measure every probe at every layer.

        Returns (train_log_gain [depth+1, replicas], measures [len(MEASURES), depth+1, replicas, probes]);
        layer 0 is the input itself (its "gain" is log of the input's norm).
        """
        k = self.width
        u = _as_vector(train_input, k, "train_input")
        m = _as_vector(message, k, "message")
        probes = np.ascontiguousarray(probes, dtype=np.float64)
        if probes.ndim != 2 or probes.shape[1] != k:
            raise ValueError(f"probes: expected shape [n_probes, {k}] (model.width), got {probes.shape}")
        if not (np.isfinite(u).all() and np.isfinite(probes).all() and np.isfinite(m).all()):
            raise ValueError("train_input, probes and message must be finite")
        if not np.any(u):
            raise ValueError("train_input: the zero vector selects nothing (every candidate scores 0); "
                             "use a nonzero training input")
        train_log_gain = np.empty((self.depth + 1, replicas))
        out = np.empty((len(MEASURES), self.depth + 1, replicas, probes.shape[0]))
        over_replicas(_measure_chains, replicas, np.uint64(seed), np.int64(first_replica), u, probes, m, float(alpha),
                      self.kernel_ints(), train_log_gain, out)
        return train_log_gain, out


def _as_vector(values, k, name):
    v = np.ascontiguousarray(values, dtype=np.float64)
    if v.shape != (k,):
        raise ValueError(f"{name}: expected a vector of length {k} (model.width), got shape {v.shape}")
    return v


@njit(cache=True, error_model="numpy")
def _fill_row(seed, replica, layer, row, out):
    """out[:] = R_layer[row, :] (one candidate row, regenerated from its counters)."""
    k = out.shape[0]
    half = (k + 1) // 2
    for p in range(half):
        z0, z1 = normal_pair(seed, replica, STREAM_CHAIN, layer, row * half + p)
        out[2 * p] = z0
        if 2 * p + 1 < k:
            out[2 * p + 1] = z1


@njit(cache=True, error_model="numpy")
def _fill_candidates(seed, replica, layer, out):
    for i in range(out.shape[0]):
        _fill_row(seed, replica, layer, i, out[i])


@njit(cache=True, error_model="numpy")
def _select_layer(seed, replica, layer, x, selection, n, w, row, score):
    """Fill w [k, k] with the k selected candidate rows for the current vector x (ordered by score)."""
    k = x.shape[0]
    for i in range(n):
        _fill_row(seed, replica, layer, i, row)
        y = 0.0
        for j in range(k):
            y += row[j] * x[j]
        # ascending sort puts the kept rows first: -|y| for magnitude, y itself for most negative
        score[i] = y if selection == _NEGATIVE else -abs(y)
    order = np.argsort(score, kind="mergesort")  # stable: equal scores keep row order
    for a in range(k):
        _fill_row(seed, replica, layer, order[a], w[a])


@njit(cache=True, error_model="numpy")
def _apply(w, v, out):
    k = w.shape[0]
    for a in range(k):
        s = 0.0
        for j in range(k):
            s += w[a, j] * v[j]
        out[a] = s


@njit(cache=True, error_model="numpy")
def _post_process(v, mode):
    """Make v the unit vector of the layer output post(v); returns log |v| as it came (-inf for 0).

    Whatever the mode, v leaves as a unit vector (or zero): only directions propagate, and the
    linear chain's norms are carried as sums of these logs, so no depth overflows.
    """
    k = v.shape[0]
    sq = 0.0
    for a in range(k):
        sq += v[a] * v[a]
    norm = math.sqrt(sq)
    if norm == 0.0:
        return -np.inf
    for a in range(k):
        v[a] /= norm  # _RELU_READOUT propagates like _LINEAR: relu acts on the read-out only (_read_out)
    if mode == _RELU or mode == _SOFTMAX:
        if mode == _RELU:
            for a in range(k):
                v[a] = max(v[a], 0.0)
        else:
            vmax = -np.inf
            for a in range(k):
                vmax = max(vmax, v[a])
            for a in range(k):
                v[a] = math.exp(v[a] - vmax)
        sq = 0.0
        for a in range(k):
            sq += v[a] * v[a]
        rest = math.sqrt(sq)
        if rest == 0.0:  # relu of a vector with no positive component
            return -np.inf
        for a in range(k):
            v[a] /= rest
    return math.log(norm)


@njit(cache=True, error_model="numpy")
def _read_out(v, mode, raw, out) -> bool:
    """What is compared at a layer: the unit vector v itself, or (``relu_readout``) raw = relu(v) and
    out = raw made a unit vector; False when the read-out vanishes (no positive component)."""
    k = v.shape[0]
    if mode != _RELU_READOUT:
        raw[:] = v
        out[:] = v
        return True
    sq = 0.0
    for a in range(k):
        raw[a] = max(v[a], 0.0)
        sq += raw[a] * raw[a]
    if sq == 0.0:
        return False
    norm = math.sqrt(sq)
    for a in range(k):
        out[a] = raw[a] / norm
    return True


@njit(cache=True, error_model="numpy")
def _compare(u, v, log_gain_v, message, message_norm, alpha, out, layer, r, p):
    """Fill out[:, layer, r, p] with the measures of unit vectors u (training input) and v (probe)."""
    k = u.shape[0]
    if log_gain_v == -np.inf:  # the probe's output vanished (relu): no direction to compare
        out[0, layer, r, p] = np.nan
        out[1, layer, r, p] = np.nan
        out[2, layer, r, p] = np.nan
        out[3, layer, r, p] = log_gain_v
        out[4, layer, r, p] = np.nan
        out[5, layer, r, p] = np.nan
        return
    dot = 0.0
    diff = 0.0
    summ = 0.0
    flips = 0
    err = 0.0
    for a in range(k):
        dot += u[a] * v[a]
        d = u[a] - v[a]
        s = u[a] + v[a]
        diff += d * d
        summ += s * s
        if (u[a] > 0.0) != (v[a] > 0.0):
            flips += 1
        c = message[a] - alpha * v[a]  # the wormhole, literally: c from key b, then m_hat with key a
        m_hat = c + alpha * u[a]
        e = m_hat - message[a]
        err += e * e
    out[0, layer, r, p] = 2.0 * math.atan2(math.sqrt(diff), math.sqrt(summ)) / math.pi
    out[1, layer, r, p] = dot
    out[2, layer, r, p] = flips / k
    out[3, layer, r, p] = log_gain_v
    out[4, layer, r, p] = math.sqrt(err) / message_norm
    out[5, layer, r, p] = diff / 4.0  # (1 - cos) / 2 of unit vectors; relu_readout overwrites it


@njit(cache=True, error_model="numpy", nogil=True)
def _measure_chains(r0, r1, seed, first_replica, train_input, probes, message, alpha, mi, train_log_gain, out):
    k, n, depth, selection, mode = mi[0], mi[1], mi[2], mi[3], mi[4]
    n_probes = probes.shape[0]
    message_norm = 0.0
    for a in range(k):
        message_norm += message[a] * message[a]
    message_norm = math.sqrt(message_norm)
    for r in range(r0, r1):
        replica = first_replica + r
        x = train_input.copy()
        vs = probes.copy()
        w = np.empty((k, k))
        row = np.empty(k)
        score = np.empty(n)
        tmp = np.empty(k)
        seen = np.empty((4, k))  # read-outs: raw u, unit u, raw v, unit v
        # layer 0: the inputs themselves (normalised; their log-norms recorded)
        train_log_gain[0, r] = _post_process(x, _NORMALISED)
        u_seen = _read_out(x, mode, seen[0], seen[1])
        for p in range(n_probes):
            gain = _post_process(vs[p], _NORMALISED)
            _compare_read_out(seen, u_seen, vs[p], gain, mode, message, message_norm, alpha, out, 0, r, p)
        for layer in range(1, depth + 1):
            _select_layer(seed, replica, layer, x, selection, n, w, row, score)
            _apply(w, x, tmp)
            train_log_gain[layer, r] = _post_process(tmp, mode)
            x[:] = tmp
            u_seen = _read_out(x, mode, seen[0], seen[1])
            for p in range(n_probes):
                _apply(w, vs[p], tmp)
                gain = _post_process(tmp, mode)
                vs[p, :] = tmp
                _compare_read_out(seen, u_seen, vs[p], gain, mode, message, message_norm, alpha, out, layer, r, p)


@njit(cache=True, error_model="numpy")
def _compare_read_out(seen, u_seen, v, gain, mode, message, message_norm, alpha, out, layer, r, p):
    """_compare on the read-outs of the training input (``seen[0:2]``, valid if ``u_seen``) and of v;
    a vanished read-out compares as a vanished output (NaN measures), its log gain kept. With
    ``relu_readout`` the squared distance is |relu(u) - relu(v)|^2 / 4 of the linear chain's unit
    vectors, not renormalised: 0 where they agree, 1/4 where they point opposite ways (the
    authors' d of their relu script), while the angular distance of the relu'd directions is 1/2."""
    if not (u_seen and _read_out(v, mode, seen[2], seen[3])):
        _compare(seen[1], seen[3], -np.inf, message, message_norm, alpha, out, layer, r, p)
        out[3, layer, r, p] = gain
        return
    _compare(seen[1], seen[3], gain, message, message_norm, alpha, out, layer, r, p)
    out[3, layer, r, p] = gain  # the log gain is the chain's, whatever the read-out
    if mode == _RELU_READOUT:
        sq = 0.0
        for a in range(v.shape[0]):
            d = seen[0, a] - seen[2, a]
            sq += d * d
        out[5, layer, r, p] = sq / 4.0


@njit(cache=True, error_model="numpy")
def _chain_weights(seed, replica, train_input, mi, out):
    k, n, depth, selection, mode = mi[0], mi[1], mi[2], mi[3], mi[4]
    x = train_input.copy()
    _post_process(x, _NORMALISED)
    row = np.empty(k)
    score = np.empty(n)
    tmp = np.empty(k)
    for layer in range(1, depth + 1):
        _select_layer(seed, replica, layer, x, selection, n, out[layer - 1], row, score)
        _apply(out[layer - 1], x, tmp)
        _post_process(tmp, mode)
        x[:] = tmp
