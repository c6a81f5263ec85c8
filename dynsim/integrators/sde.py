"""Compiled steps of the continuous-time trainer: gradient flow with noise,

    d theta = a(theta) dt + B(theta) dW,    a = -(grad L + lambda theta),

integrated with time step dt (t = step * dt). Two pieces, kept apart so that the schemes can be
verified on SDEs with known solutions (tests/test_sde.py) with exactly the code the engine runs:

* ``scheme_stage``: the arithmetic of one stage of a scheme (Euler-Maruyama, stochastic Heun,
  RK4), given the drift a and the noise B xi evaluated by the caller at the stage's point. The
  caller evaluates at ``theta`` for stage 0 and at ``point`` after that, and passes the same
  standard normals xi (the Brownian increment is sqrt(dt) B xi) to every stage of a step.
* ``network_drift_noise``: a and B xi for the simple network, in one pass over the training set.

The SGD noise never forms a dim x dim or P x P matrix. Sigma = (1/P) sum_mu (g_mu - gbar)(g_mu - gbar)^T
is G G^T with the dim x P factor G = [g_mu - gbar] / sqrt(P), so B = sqrt(eta / batch) G has
B B^T = (eta / batch) Sigma, and B xi (xi ~ N(0, I_P)) has the right law. It is accumulated as
sqrt(eta / (batch P)) (sum_mu xi_mu g_mu - (sum_mu xi_mu) gbar), one per-sample gradient at a time.
Weight decay adds the same lambda theta to every g_mu and so drops out of the centred factor.
"""
import math

from numba import njit

from ..losses import loss_derivative, loss_value
from ..models.simple import MI_DIM, add_gradient, forward
from ..rng import STREAM_NOISE, normal_pair
from . import NOISES, SCHEMES, TF_DT, TF_NOISE_COEF, TF_SQRT_DT, TF_WEIGHT_DECAY, TI_LOSS, TI_N_XI, TI_NOISE, TI_SCHEME

EULER_MARUYAMA, HEUN, RK4 = (SCHEMES[n].code for n in ("euler_maruyama", "heun", "rk4"))
NOISE_NONE, NOISE_SGD, NOISE_LANGEVIN, NOISE_LOSS_SCALED = (NOISES[n].code for n in
                                                            ("none", "sgd", "langevin", "loss_scaled"))
# Rows of the per-replica workspace ``work`` [WORK_ROWS, dim].
W_DRIFT, W_NOISE, W_POINT, W_ACC, W_SAMPLE_GRAD = range(5)
WORK_ROWS = 5


@njit(cache=True, error_model="numpy", inline="always")
def scheme_stages(scheme):
    """Drift evaluations per step."""
    if scheme == HEUN:
        return 2
    if scheme == RK4:
        return 4
    return 1


@njit(cache=True, error_model="numpy", inline="always")
def scheme_stage(scheme, stage, theta, point, acc, drift, noise, dt, sqrt_dt):
    """Apply stage ``stage`` given a = ``drift`` and B xi = ``noise`` at its evaluation point.

    Stage 0 is evaluated at ``theta``, later ones at ``point`` (which this function fills). The
    last stage writes theta at time t + dt. ``noise`` is ignored by RK4 (deterministic only).
    """
    dim = theta.shape[0]
    if scheme == EULER_MARUYAMA:
        for j in range(dim):
            theta[j] += drift[j] * dt + sqrt_dt * noise[j]
    elif scheme == HEUN:
        if stage == 0:  # predictor, and keep a(theta)
            for j in range(dim):
                acc[j] = drift[j]
                point[j] = theta[j] + drift[j] * dt + sqrt_dt * noise[j]
        else:  # trapezoidal drift, the same increment (B is constant: additive noise only)
            half = 0.5 * dt
            for j in range(dim):
                theta[j] += half * (acc[j] + drift[j]) + sqrt_dt * noise[j]
    else:  # RK4: k1 at theta, k2 at theta + dt/2 k1, k3 at theta + dt/2 k2, k4 at theta + dt k3
        if stage == 0:
            for j in range(dim):
                acc[j] = drift[j]
                point[j] = theta[j] + 0.5 * dt * drift[j]
        elif stage == 1:
            for j in range(dim):
                acc[j] += 2.0 * drift[j]
                point[j] = theta[j] + 0.5 * dt * drift[j]
        elif stage == 2:
            for j in range(dim):
                acc[j] += 2.0 * drift[j]
                point[j] = theta[j] + dt * drift[j]
        else:
            sixth = dt / 6.0
            for j in range(dim):
                theta[j] += sixth * (acc[j] + drift[j])


# Called, not inlined: one call per scheme stage does a pass over the whole training set, so the call
# costs nothing, and the step's compile time no longer carries two inlined gradient passes.
@njit(cache=True, error_model="numpy")
def network_drift_noise(theta, x, y, mi, mf, ti, tf, xi, z, h, sample_grad, drift, noise):
    """drift = -(grad L + lambda theta) and noise = B(theta) xi at ``theta``; False if not finite.

    L = (1/P) sum_mu l(f(x_mu), y_mu) over the whole training set (the SDE's drift is the
    full-batch gradient); xi holds the standard normals of the step (P of them for SGD noise,
    n_params for the isotropic noises).
    """
    dim = mi[MI_DIM]
    n_train = x.shape[0]
    loss_code = ti[TI_LOSS]
    kind = ti[TI_NOISE]
    inv_p = 1.0 / n_train
    for j in range(dim):
        drift[j] = 0.0
    if kind == NOISE_SGD:
        for j in range(dim):
            noise[j] = 0.0
    xi_sum = 0.0
    loss_sum = 0.0
    dl_sum = 0.0
    for mu in range(n_train):
        f = forward(theta, x[mu], mi, mf, z, h)
        dl = loss_derivative(f, y[mu], loss_code)
        dl_sum += dl
        if kind == NOISE_LOSS_SCALED:
            loss_sum += loss_value(f, y[mu], loss_code)
        if kind == NOISE_SGD:
            for j in range(dim):
                sample_grad[j] = 0.0
            add_gradient(theta, x[mu], mi, mf, z, h, dl, sample_grad)
            w = xi[mu]
            xi_sum += w
            for j in range(dim):
                drift[j] += inv_p * sample_grad[j]
                noise[j] += w * sample_grad[j]
        else:
            add_gradient(theta, x[mu], mi, mf, z, h, inv_p * dl, drift)
    if not math.isfinite(dl_sum):
        return False
    finish_drift_noise(theta, tf, kind, xi, xi_sum, loss_sum * inv_p, drift, noise)
    return True


@njit(cache=True, error_model="numpy", inline="always")
def finish_drift_noise(theta, tf, kind, xi, xi_sum, loss_mean, drift, noise):
    """From the training-set pass to the SDE's drift and noise, for any network.

    On entry drift holds grad L (the mean per-sample gradient gbar) and, for SGD noise, noise holds
    sum_mu xi_mu g_mu (xi_sum = sum_mu xi_mu); on exit drift = -(grad L + lambda theta) and
    noise = B(theta) xi for the noise ``kind``.
    """
    dim = theta.shape[0]
    coef = tf[TF_NOISE_COEF]
    if kind == NOISE_SGD:
        for j in range(dim):
            noise[j] = coef * (noise[j] - xi_sum * drift[j])
    elif kind == NOISE_LANGEVIN:
        for j in range(dim):
            noise[j] = coef * xi[j]
    elif kind == NOISE_LOSS_SCALED:
        amp = coef * math.sqrt(loss_mean)
        for j in range(dim):
            noise[j] = amp * xi[j]
    else:
        for j in range(dim):
            noise[j] = 0.0
    decay = tf[TF_WEIGHT_DECAY]
    for j in range(dim):
        drift[j] = -drift[j] - decay * theta[j]


@njit(cache=True, error_model="numpy", inline="always")
def fill_step_normals(seed, replica, step, xi, n):
    """The step's standard normals: draws 0..n-1 of (seed, replica, NOISE, step)."""
    for k in range((n + 1) // 2):
        z0, z1 = normal_pair(seed, replica, STREAM_NOISE, step, k)
        xi[2 * k] = z0
        if 2 * k + 1 < n:
            xi[2 * k + 1] = z1


@njit(cache=True, error_model="numpy", inline="always")
def sde_step(theta, x, y, mi, mf, ti, tf, seed, replica, step, z, h, xi, work):
    """Advance one replica from t = step dt to t + dt in place; False if the gradient was not finite."""
    scheme = ti[TI_SCHEME]
    dt = tf[TF_DT]
    sqrt_dt = tf[TF_SQRT_DT]
    fill_step_normals(seed, replica, step, xi, ti[TI_N_XI])
    drift = work[W_DRIFT]
    noise = work[W_NOISE]
    point = work[W_POINT]
    for stage in range(scheme_stages(scheme)):
        at = theta if stage == 0 else point
        if not network_drift_noise(at, x, y, mi, mf, ti, tf, xi, z, h, work[W_SAMPLE_GRAD], drift, noise):
            return False
        scheme_stage(scheme, stage, theta, point, work[W_ACC], drift, noise, dt, sqrt_dt)
    return True
