"""Power-law fits of aging observables and a comparison with exponential decays.

Everything here fits the *ensemble mean* over replicas, in log space:

* :func:`fit_power_law` fits ``log <y>(t) = log A + alpha log t`` by weighted least squares, the
  weights being the inverse variance of ``log <y>`` estimated from the replica spread, and puts a
  bootstrap-over-replicas percentile interval on ``alpha``.
* :func:`compare_decay_models` fits a power law, an exponential and a stretched exponential to
  ``log <y>`` by (unweighted) least squares and ranks them by AIC.

Inputs: ``t`` is a 1-D array of T strictly increasing positive times; ``y`` is ``[replica, T]``
(or ``[T]`` for a single replica) of positive values, NaN where not measured (ignored). A
``window=(t_min, t_max)`` restricts the fit to ``t_min <= t <= t_max`` (inclusive); ``None`` uses
every point. Bad input raises ``ValueError`` naming the argument and the fix.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import scipy.optimize
import scipy.stats

__all__ = ["PowerLawFit", "fit_power_law", "DecayModel", "DecayComparison", "compare_decay_models"]

# Fewer points cannot distinguish a straight line from noise (2 points fit any line exactly) and leave
# no degree of freedom for the residual used by the single-replica interval.
MIN_POINTS = 3
# The floor on the variance of log <y> used for the weights, relative to the median variance of the
# fit's points: a point whose replicas happen to agree exactly (variance 0, e.g. a deterministic
# initial condition) would otherwise get infinite weight and pin the line. 0.1 caps any point's
# weight at 10x the typical one: with 1e-2 a single zero-variance point already halved the bootstrap
# interval (it pins the intercept in every resample), and a sample variance from a few replicas
# falls below 0.1x its true value by chance often enough (~1% with 4 replicas) to matter. Points
# legitimately more precise than that lose a little efficiency, never accuracy.
VARIANCE_FLOOR = 0.1
# Bootstrap replicates are processed in blocks of at most this many matrix entries so that memory
# stays bounded (~tens of MB) for long series with many replicas and many replicates.
_BLOCK_ENTRIES = 2_000_000
# Bounds on tau of the exponential models, relative to the window: wide enough that a fit never
# stops at a bound when a model describes the data, finite so that least_squares is well posed.
_TAU_RANGE = 1e6
# Lower bound on the stretching exponent beta: below it (t/tau)^beta is numerically ~constant.
_BETA_MIN = 0.01


def _fmt(v: float) -> str:
    """Compact number: 10 -> '10', 10000 -> '1e4', 0.00123 -> '0.00123'."""
    s = f"{v:.3g}"
    if "e" in s:
        mant, exp = s.split("e")
        s = f"{mant}e{int(exp)}"
    return s


def _window_text(window: tuple[float, float]) -> str:
    return f"t in [{_fmt(window[0])}, {_fmt(window[1])}]"


# --------------------------------------------------------------------------------------------------
# validation


def _as_times(t, require_positive=True) -> np.ndarray:
    t = np.asarray(t, dtype=float)
    if t.ndim != 1:
        raise ValueError(f"t must be a 1-D array of times, got shape {t.shape}; pass one time per column of y")
    if t.size == 0:
        raise ValueError("t is empty; pass at least 3 positive times")
    if not np.all(np.isfinite(t)):
        raise ValueError("t contains NaN or inf; drop those times (and the matching columns of y)")
    if require_positive and np.any(t <= 0):
        raise ValueError(f"t must be positive (the fit is in log t), got min(t) = {t.min():g}; "
                         "drop t <= 0 (e.g. the initial record at step 0) or shift the time origin")
    if np.any(np.diff(t) <= 0):
        raise ValueError("t must be strictly increasing; sort t (and the columns of y with it) and merge duplicates")
    return t


def _as_replicas(y, n_t: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.ndim == 1:
        y = y[None, :]  # a single replica
    if y.ndim != 2 or y.shape[1] != n_t:
        raise ValueError(f"y must have shape [replica, T] or [T] with T = len(t) = {n_t}, got shape {y.shape}; "
                         "transpose it if replicas are along the last axis")
    if np.any(np.isinf(y)):
        raise ValueError("y contains inf; replace diverged values by NaN (NaN entries are ignored)")
    return y


def _window_mask(t: np.ndarray, window) -> np.ndarray:
    if window is None:
        return np.ones(t.shape, dtype=bool)
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a pair (t_min, t_max) of numbers or None, got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
        raise ValueError(f"window must be (t_min, t_max) with finite t_min < t_max, got {window!r}")
    return (t >= lo) & (t <= hi)


def _prepare(t, y, window):
    """Validated (t, Y[replica, T], window actually used) restricted to the window.

    Time points with no finite value and replicas with no finite value in the window are dropped:
    they carry no information, and an all-NaN replica would only dilute the bootstrap.
    """
    # times <= 0 (the record at step 0) may lie outside an explicit window
    t = _as_times(t, require_positive=window is None)
    y = _as_replicas(y, t.size)
    inside = _window_mask(t, window)
    t, y = t[inside], y[:, inside]
    if np.any(t <= 0):
        raise ValueError(f"t must be positive inside the window (the fit is in log t), got min(t) = {t.min():g}; "
                         "start the window above 0")
    finite = np.isfinite(y)
    if not finite.any():
        where = f" inside window={window!r}" if window is not None else ""
        raise ValueError(f"y has no finite value{where}; pass measured data (NaN marks missing entries)")
    bad = finite & (y <= 0)
    if bad.any():
        raise ValueError(f"y must be positive where finite (the fit is in log y), found {int(bad.sum())} values <= 0; "
                         "subtract a plateau so that the decaying part is positive, or fit |y| if the sign is a "
                         "convention")
    keep_t = finite.any(axis=0)
    keep_r = finite.any(axis=1)
    t, y = t[keep_t], y[np.ix_(keep_r, keep_t)]
    if t.size < MIN_POINTS:
        if window is not None:
            raise ValueError(f"window={window!r} holds only {t.size} time points with data, need at least "
                             f"{MIN_POINTS}; widen the window or record more times inside it")
        raise ValueError(f"y has finite values at only {t.size} times, need at least {MIN_POINTS}; "
                         "pass a longer series")
    return t, y, (float(t[0]), float(t[-1]))


def _check_confidence(confidence) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    return c


# --------------------------------------------------------------------------------------------------
# power law


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """``<y>(t) ~ amplitude * t**exponent`` fitted over ``window``; see :func:`fit_power_law`."""

    exponent: float                     # alpha in y ~ A t^alpha (negative for a decay)
    exponent_ci: tuple[float, float]    # bootstrap percentile interval over replicas (1 replica: WLS t-interval)
    amplitude: float                    # A
    window: tuple[float, float]         # (t_min, t_max) of the points actually used (inclusive)
    n_points: int
    n_replicas: int
    confidence: float
    residual_rms: float                 # RMS residual of the fit in natural-log units

    def summary(self) -> str:
        lo, hi = self.exponent_ci
        kind = (f"{self.n_replicas} replicas" if self.n_replicas > 1
                else "1 replica, WLS t-interval")
        return (f"alpha = {self.exponent:.3f} [{lo:.3f}, {hi:.3f}] ({self.confidence * 100:g}% CI, {kind}, "
                f"{_window_text(self.window)}, {self.n_points} points)")


def _log_mean_stats(y: np.ndarray, counts: np.ndarray):
    """Log of the ensemble mean and its variance for each row of replica multiplicities.

    ``counts[b, r]`` is how often replica r is drawn in ensemble b (all ones: the data itself; a
    multinomial row: one bootstrap resample), so one matrix product gives every resampled mean
    without materialising the resampled [B, R, T] array. Returns ``z[b, t] = log mean`` (NaN where
    ensemble b has no value at t) and ``v[b, t]``, the delta-method variance of ``z``,
    ``var / (n mean^2)`` with the sample variance (ddof 1) of the n drawn values (NaN where n < 2).
    """
    finite = np.isfinite(y)
    # Centre each column on the full-data mean before summing squares: the variance is then a small
    # difference of small numbers, not of two large ones (no cancellation when the spread is tiny).
    centre = np.nanmean(y, axis=0)
    d = np.where(finite, y - centre, 0.0)
    n = counts @ finite.astype(float)
    s1 = counts @ d
    s2 = counts @ (d * d)
    with np.errstate(divide="ignore", invalid="ignore"):
        dmean = s1 / n
        mean = centre + dmean
        var = np.maximum(s2 - n * dmean * dmean, 0.0) / (n - 1.0)
        z = np.log(mean)
        v = var / (n * mean * mean)
    z[n < 1] = np.nan
    v[n < 2] = np.nan
    return z, v


def _weights(z: np.ndarray, v: np.ndarray, equal: bool) -> np.ndarray:
    """WLS weights 1 / var(log mean), floored; 0 where the ensemble has no value.

    The variance is floored at VARIANCE_FLOOR times the median positive variance of the row, so a
    point whose replicas agree exactly cannot dominate. A point with a single finite replica has no
    variance estimate; it gets the largest variance of the row (the least weight) rather than
    being trusted. Rows with no positive variance (all replicas identical) get equal weights.
    """
    valid = np.isfinite(z)
    if equal:
        return valid.astype(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: handled below
        positive = np.where(v > 0, v, np.nan)
        floor = VARIANCE_FLOOR * np.nanmedian(positive, axis=1, keepdims=True)
        v = np.maximum(v, floor)
        v = np.where(valid & np.isnan(v), np.nanmax(v, axis=1, keepdims=True), v)
    w = np.where(valid, 1.0 / v, 0.0)
    # No usable variance in the row at all: fall back to ordinary least squares.
    no_var = ~np.isfinite(w).all(axis=1) | ~(w > 0).any(axis=1)
    w[no_var] = valid[no_var]
    return w


def _wls(x: np.ndarray, z: np.ndarray, w: np.ndarray):
    """Slope and intercept of z ~ a + b x for each row, weights w (0 = excluded); NaN if < 3 points."""
    z = np.where(w > 0, z, 0.0)
    sw = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xb = (w @ x) / sw
        zb = (w * z).sum(axis=1) / sw
        dx = x[None, :] - xb[:, None]
        sxx = (w * dx * dx).sum(axis=1)
        slope = (w * dx * (z - zb[:, None])).sum(axis=1) / sxx
    intercept = zb - slope * xb
    bad = ((w > 0).sum(axis=1) < MIN_POINTS) | ~(sxx > 0)
    slope[bad] = np.nan
    intercept[bad] = np.nan
    return slope, intercept


def fit_power_law(t, y, *, window=None, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> PowerLawFit:
    """Fit ``log <y>(t) = log A + alpha log t`` over ``window`` and bootstrap a CI on ``alpha``.

    ``<y>`` is the ensemble mean over replicas at each time (NaN entries ignored: the mean is over
    the replicas measured at that time). The fit is weighted least squares of ``log <y>`` against
    ``log t`` with weights ``1 / var(log <y>)``, where ``var(log <y>) = (SEM / <y>)^2`` comes from the
    replica spread (delta method), floored at ``VARIANCE_FLOOR`` x the median variance so that a
    zero-variance point does not get infinite weight; a time measured by a single replica gets the
    largest variance of the window. With a single replica the weights are equal (ordinary LS).

    Interval on ``alpha`` at level ``confidence``:

    * several replicas: bootstrap over replicas. ``n_boot`` times, the replica rows are resampled
      with replacement (``numpy.random.default_rng(seed)``), the ensemble mean and its weights are
      recomputed from the resample and the WLS refitted; the interval is the percentile interval of
      the refitted slopes. It measures replica-to-replica (sampling) uncertainty only, not whether
      a power law is the right model over the window (see ``residual_rms`` and
      :func:`compare_decay_models`).
    * one replica: there is nothing to resample, so the interval is the WLS standard error of the
      slope times the Student-t quantile with ``n_points - 2`` degrees of freedom. It assumes
      independent residuals, which neighbouring times of one trajectory rarely are: treat it as
      a lower bound on the uncertainty.

    ``amplitude`` is ``exp(intercept)``; ``residual_rms`` is the unweighted RMS of
    ``log <y> - fit`` over the window; ``window`` is the (first, last) time actually used.
    """
    confidence = _check_confidence(confidence)
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer (e.g. 1000), got {n_boot!r}")
    n_boot = int(n_boot)
    t, y, used = _prepare(t, y, window)
    n_rep, n_t = y.shape
    x = np.log(t)
    single = n_rep == 1

    z, v = _log_mean_stats(y, np.ones((1, n_rep)))
    w = _weights(z, v, equal=single)
    slope, intercept = _wls(x, z, w)
    alpha, log_a = float(slope[0]), float(intercept[0])
    resid = z[0] - (log_a + alpha * x)
    rms = float(np.sqrt(np.mean(resid ** 2)))

    tail = (1.0 - confidence) / 2.0
    if single:
        dof = n_t - 2
        xc = x - x.mean()
        se = math.sqrt(float(np.sum(resid ** 2)) / dof / float(np.sum(xc ** 2)))
        half = float(scipy.stats.t.ppf(1.0 - tail, dof)) * se
        ci = (alpha - half, alpha + half)
    else:
        rng = np.random.default_rng(seed)
        block = max(1, _BLOCK_ENTRIES // max(n_rep, n_t))
        boots = []
        for start in range(0, n_boot, block):
            b = min(block, n_boot - start)
            # Multinomial(R, 1/R) counts are exactly the multiplicities of R draws with replacement.
            counts = rng.multinomial(n_rep, np.full(n_rep, 1.0 / n_rep), size=b).astype(float)
            zb, vb = _log_mean_stats(y, counts)
            boots.append(_wls(x, zb, _weights(zb, vb, equal=False))[0])
        boots = np.concatenate(boots)
        boots = boots[np.isfinite(boots)]  # a resample can miss every replica measured at some times
        if boots.size == 0:
            ci = (math.nan, math.nan)
        else:
            lo, hi = np.quantile(boots, [tail, 1.0 - tail])
            ci = (float(lo), float(hi))

    return PowerLawFit(exponent=alpha, exponent_ci=ci, amplitude=math.exp(log_a), window=used, n_points=n_t,
                       n_replicas=n_rep, confidence=confidence, residual_rms=rms)


# --------------------------------------------------------------------------------------------------
# model comparison


@dataclasses.dataclass(frozen=True)
class DecayModel:
    """One model fitted to ``log <y>``; see :func:`compare_decay_models`."""

    name: str                 # "power_law" | "exponential" | "stretched_exponential"
    params: dict[str, float]  # {"A", "alpha"} / {"A", "tau"} / {"A", "tau", "beta"}
    rss: float                # residual sum of squares in log y (natural log)
    aic: float                # n log(rss / n) + 2k


@dataclasses.dataclass(frozen=True)
class DecayComparison:
    """The three decay models over one window, ``best`` = smallest AIC."""

    models: dict[str, DecayModel]
    best: str
    window: tuple[float, float]

    def summary(self) -> str:
        best_aic = self.models[self.best].aic
        parts = []
        for name, m in sorted(self.models.items(), key=lambda kv: kv[1].aic):
            delta = "" if name == self.best else f" (+{m.aic - best_aic:.1f})"
            parts.append(f"{name} {m.aic:.1f}{delta}")
        decades = math.log10(self.window[1] / self.window[0])
        text = f"best = {self.best}; AIC: {', '.join(parts)}; {_window_text(self.window)} ({decades:.1f} decades)"
        if decades < 1.5:
            text += " -- window under 1.5 decades: a stretched exponential can mimic a power law, ranking unreliable"
        return text


def _aic(rss: float, n: int, k: int, scale: float) -> float:
    # A noiseless model fits to rounding error and log(0) would give -inf; floor the RSS at the
    # double-precision resolution of the data so that exact fits tie and differ only by 2k.
    rss = max(rss, n * (1e-13 * scale) ** 2)
    return n * math.log(rss / n) + 2 * k


def _fit_exponential(t, z, lt_lo, lt_hi):
    """log y = log A - t / tau, parameters (log A, log tau), several starts, best kept."""
    lt = np.log(t)

    def resid(p):
        return p[0] - np.exp(lt - p[1]) - z

    def jac(p):
        return np.column_stack((np.ones_like(t), np.exp(lt - p[1])))

    starts = [math.exp(0.5 * (lt[0] + lt[-1])), t[0], t[-1]]
    # The linear fit of log y against t gives -1/tau directly when the data decay.
    slope = np.polyfit(t, z, 1)[0]
    if slope < 0:
        starts.append(-1.0 / slope)
    best = None
    for tau0 in starts:
        ltau0 = float(np.clip(math.log(tau0), lt_lo, lt_hi))
        la0 = float(np.mean(z + np.exp(lt - ltau0)))  # optimal log A for this tau
        r = scipy.optimize.least_squares(resid, [la0, ltau0], jac=jac,
                                         bounds=([-np.inf, lt_lo], [np.inf, lt_hi]))
        if best is None or r.cost < best.cost:
            best = r
    rss = float(np.sum(resid(best.x) ** 2))
    return {"A": math.exp(best.x[0]), "tau": math.exp(best.x[1])}, rss


def _fit_stretched(t, z, lt_lo, lt_hi, exp_params):
    """log y = log A - (t / tau)^beta, parameters (log A, log tau, beta), grid of starts, best kept.

    ``exp_params`` (the exponential fit) is the beta = 1 member of this family: it is one of the
    starts, and its exact point is a candidate too, so the stretched fit never ends worse than the
    exponential it contains (least_squares converges slowly onto the beta = 1 bound).
    """
    lt = np.log(t)

    def resid(p):
        return p[0] - np.exp(p[2] * (lt - p[1])) - z

    def jac(p):
        q = np.exp(p[2] * (lt - p[1]))
        return np.column_stack((np.ones_like(t), p[2] * q, -q * (lt - p[1])))

    # The cost surface has a long, flat valley (small beta with small tau behaves like a power law,
    # beta -> 1 like an exponential), so a single start often stalls: try a grid and keep the best.
    tau_starts = [t[0] / 100.0, t[0], math.exp(0.5 * (lt[0] + lt[-1])), t[-1]]
    beta_starts = [0.1, 0.3, 0.6, 0.95]
    starts = [(tau0, beta0) for tau0 in tau_starts for beta0 in beta_starts] + [(exp_params["tau"], 0.99)]
    nested = np.array([math.log(exp_params["A"]), math.log(exp_params["tau"]), 1.0])
    best_x, best_rss = nested, float(np.sum(resid(nested) ** 2))
    for tau0, beta0 in starts:
        ltau0 = float(np.clip(math.log(tau0), lt_lo, lt_hi))
        la0 = float(np.mean(z + np.exp(beta0 * (lt - ltau0))))
        r = scipy.optimize.least_squares(resid, [la0, ltau0, beta0], jac=jac,
                                         bounds=([-np.inf, lt_lo, _BETA_MIN], [np.inf, lt_hi, 1.0]))
        rss = float(np.sum(resid(r.x) ** 2))
        if rss < best_rss:
            best_x, best_rss = r.x, rss
    return {"A": math.exp(best_x[0]), "tau": math.exp(best_x[1]), "beta": float(best_x[2])}, best_rss


def compare_decay_models(t, y, *, window=None) -> DecayComparison:
    """Fit three decays to the log of the ensemble mean over ``window`` and rank them by AIC.

    With ``z = log <y>`` (ensemble mean over replicas, NaN ignored), each model is fitted by
    unweighted least squares in ``z`` (``scipy.optimize.least_squares`` for the nonlinear ones):

    * ``power_law``: ``z = log A + alpha log t`` (linear; solved exactly), k = 2;
    * ``exponential``: ``z = log A - t / tau``, k = 2;
    * ``stretched_exponential``: ``z = log A - (t / tau)^beta`` with ``beta`` in ``[0.01, 1]``
      (stretched, never compressed; beta = 1 is the exponential), k = 3, fitted from a grid of
      16 starts in (tau, beta), best kept.

    ``tau`` is bounded to ``[t_min / 1e6, t_max * 1e6]``; a fit at a bound means the model does not
    describe the data. The lower bound also keeps the models distinct: as ``tau -> 0`` with
    ``beta -> 0`` (``beta log tau`` fixed) the stretched exponential tends to a power law, so without
    it the stretched exponential would contain the power law as a limit and could never lose by
    more than 2 in AIC. With the bound it must relax at most six decades before the window starts. ``rss`` is the residual sum of squares of ``z`` and ``aic = n log(rss / n) + 2k``
    (RSS floored at rounding level, so noiseless exact fits tie up to 2k); ``best`` has the smallest AIC.
    AIC differences above ~10 are decisive, below ~2 are not.

    Caveat: a stretched exponential with small beta has a slowly drifting log-slope and can mimic a
    power law over a short window; the comparison is only meaningful over a wide window (more than
    1.5 decades in t). It is returned anyway, and ``summary()`` says when the window is too short.
    """
    t, y, used = _prepare(t, y, window)
    z = np.log(np.nanmean(y, axis=0))
    n = t.size
    scale = max(1.0, float(np.max(np.abs(z))))
    lt_lo = math.log(t[0] / _TAU_RANGE)
    lt_hi = math.log(t[-1] * _TAU_RANGE)

    lt = np.log(t)
    alpha, log_a = np.polyfit(lt, z, 1)
    rss_pl = float(np.sum((z - (log_a + alpha * lt)) ** 2))
    p_exp, rss_exp = _fit_exponential(t, z, lt_lo, lt_hi)
    p_str, rss_str = _fit_stretched(t, z, lt_lo, lt_hi, p_exp)

    models = {
        "power_law": DecayModel("power_law", {"A": math.exp(log_a), "alpha": float(alpha)}, rss_pl,
                                _aic(rss_pl, n, 2, scale)),
        "exponential": DecayModel("exponential", p_exp, rss_exp, _aic(rss_exp, n, 2, scale)),
        "stretched_exponential": DecayModel("stretched_exponential", p_str, rss_str, _aic(rss_str, n, 3, scale)),
    }
    best = min(models, key=lambda k: models[k].aic)
    return DecayComparison(models=models, best=best, window=used)
