"""Per-sample losses l(f, y) and their derivatives dl/df as compiled scalar kernels.

squared:          l = (f - y)^2 / 2,            l' = f - y
cross_entropy:    l = log(1 + exp(-y f)),       l' = -y sigmoid(-y f)     (labels y = +-1)
sigmoid_squared:  l = (p - t)^2 / 2, p = sigmoid(f), t = (1 + y) / 2 (labels y = +-1),
                  l' = (p - t) p (1 - p): squared error of a sigmoid output, written on the logit f
                  (the saturating output of the encoding problem; ../shared/papers/nakazato.md)

The training loss is L(theta) = (1/P) sum_mu l(f(x_mu; theta), y_mu).
"""
import math

from numba import njit

LOSSES = {"squared": 0, "cross_entropy": 1, "sigmoid_squared": 2}
SQUARED, CROSS_ENTROPY, SIGMOID_SQUARED = range(3)
#: Losses of K-class outputs (the deep MLP, ``dynsim.models.deep``): computed by that model's own
#: kernels, not by the scalar functions here. softmax_cross_entropy: l = log sum_k exp(f_k) - f_y.
MULTICLASS_LOSSES = {"softmax_cross_entropy": 3}


@njit(cache=True, error_model="numpy", inline="always")
def _sigmoid_pair(f):
    """(sigmoid(f), 1 - sigmoid(f)), each computed without cancellation or overflow."""
    if f >= 0.0:
        e = math.exp(-f)
        return 1.0 / (1.0 + e), e / (1.0 + e)
    e = math.exp(f)
    return e / (1.0 + e), 1.0 / (1.0 + e)


@njit(cache=True, error_model="numpy", inline="always")
def loss_value(f, y, code):
    if code == SQUARED:
        r = f - y
        return 0.5 * r * r
    if code == SIGMOID_SQUARED:
        p, q = _sigmoid_pair(f)
        r = -q if y > 0.0 else p  # p - t for t = 1 or 0, without forming 1 - q
        return 0.5 * r * r
    m = -y * f  # log(1 + exp(m)) evaluated without overflow
    return max(m, 0.0) + math.log1p(math.exp(-abs(m)))


@njit(cache=True, error_model="numpy", inline="always")
def loss_derivative(f, y, code):
    if code == SQUARED:
        return f - y
    if code == SIGMOID_SQUARED:
        p, q = _sigmoid_pair(f)
        r = -q if y > 0.0 else p
        return r * p * q
    m = -y * f
    if m >= 0.0:
        s = 1.0 / (1.0 + math.exp(-m))
    else:
        e = math.exp(m)
        s = e / (1.0 + e)
    return -y * s
