"""Per-sample losses l(f, y) and their derivatives dl/df as compiled scalar kernels.

squared:        l = (f - y)^2 / 2,            l' = f - y
cross_entropy:  l = log(1 + exp(-y f)),       l' = -y sigmoid(-y f)     (labels y = +-1)

The training loss is L(theta) = (1/P) sum_mu l(f(x_mu; theta), y_mu).
"""
import math

from numba import njit

LOSSES = {"squared": 0, "cross_entropy": 1}
SQUARED, CROSS_ENTROPY = range(2)


@njit(cache=True, error_model="numpy", inline="always")
def loss_value(f, y, code):
    if code == SQUARED:
        r = f - y
        return 0.5 * r * r
    m = -y * f  # log(1 + exp(m)) evaluated without overflow
    return max(m, 0.0) + math.log1p(math.exp(-abs(m)))


@njit(cache=True, error_model="numpy", inline="always")
def loss_derivative(f, y, code):
    if code == SQUARED:
        return f - y
    m = -y * f
    if m >= 0.0:
        s = 1.0 / (1.0 + math.exp(-m))
    else:
        e = math.exp(m)
        s = e / (1.0 + e)
    return -y * s
