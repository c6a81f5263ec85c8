"""Aging scaling collapse of two-time data.

A two-time observable ``C(t_w, tau)`` (a correlation, or an MSD) *ages with exponent mu* when it
depends on its two times only through the scaling variable ``x = tau / t_w**mu``: plotted against
``x``, the curves of different waiting times ``t_w`` fall onto one master curve. ``mu = 1`` is
simple aging, ``mu = 0`` no aging (time-translation invariance), ``0 < mu < 1`` sub-aging and
``mu > 1`` super-aging.

:func:`collapse_quality` measures how well the curves fall onto each other for a given ``mu``;
:func:`best_collapse` finds the ``mu`` that minimises it and bootstraps an interval over replicas.

That pairwise quality is only piecewise smooth in ``mu``: points enter and leave the ranges where
two curves overlap, so its minimum often sits on a kink that every bootstrap resample shares, and the
bootstrap interval collapses to a point ([1.478, 1.478] on the aging_tanh run). ``best_collapse``
therefore also gives a *master-curve* estimate: one polynomial of degree ``MASTER_DEGREE`` in
``log x`` fitted by least squares to every measured point at once, its residual over the variance as
the quality. Every point always takes part and the polynomial space does not depend on where ``x``
lies, so that quality is smooth in ``mu``, and its bootstrap interval over replicas is a real one.

Shapes: ``t_w`` is ``[W]`` positive waiting times, ``tau`` is ``[L]`` strictly increasing positive
lags, ``values`` is ``[W, L]`` (the ensemble mean) or ``[W, L, replica]``, NaN where a pair was not
measured (e.g. ``t_w + tau`` beyond the run).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.optimize
import scipy.sparse

__all__ = ["collapse_quality", "CollapseFit", "best_collapse"]

# A pair of curves overlapping on one point only says nothing about their shapes (one point of an
# edge touching the other curve's range); a pair counts from this many overlap points on.
MIN_OVERLAP = 2
# Degree of the master curve's polynomial in log x: enough for a relaxation over several decades (on
# the tests' stretched exponential over ~8 decades of x, degree 6 biased mu by -0.01 and 10 does not),
# few enough that it cannot follow the spread of uncollapsed curves.
MASTER_DEGREE = 10


# --------------------------------------------------------------------------------------------------
# validation


def _as_positive_1d(a, name: str, *, increasing: bool) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError(f"{name} must be finite and positive (the scaling variable is built from log {name}); "
                         f"drop zero or non-finite entries (and the matching slices of values)")
    if increasing and np.any(np.diff(a) <= 0):
        raise ValueError(f"{name} must be strictly increasing; sort it (and values along that axis) and merge duplicates")
    return a


def _validate(t_w, tau, values, *, replicas: bool):
    t_w = _as_positive_1d(t_w, "t_w", increasing=False)
    tau = _as_positive_1d(tau, "tau", increasing=True)
    values = np.asarray(values, dtype=float)
    shape = (t_w.size, tau.size)
    if replicas and values.ndim == 2:
        values = values[:, :, None]  # one replica
    ok = values.shape[:2] == shape and values.ndim == (3 if replicas else 2)
    if not ok:
        want = "[W, L, replica] or [W, L]" if replicas else "[W, L]"
        raise ValueError(f"values must have shape {want} with W = len(t_w) = {shape[0]} and "
                         f"L = len(tau) = {shape[1]}, got {values.shape}; put t_w on the first axis, tau on the second")
    if np.any(np.isinf(values)):
        raise ValueError("values contains inf; replace unmeasured or diverged entries by NaN")
    if t_w.size < 2:
        raise ValueError("t_w must hold at least 2 waiting times: a collapse compares curves of different t_w")
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError("values is all NaN; pass measured data (NaN marks unmeasured (t_w, tau) pairs only)")
    return t_w, tau, values


# --------------------------------------------------------------------------------------------------
# the pairwise interpolation operator


def _overlap_operator(log_tw: np.ndarray, log_tau: np.ndarray, mask: np.ndarray, mu: float):
    """Flat-index form of "interpolate curve j at curve i's points" for every ordered pair i != j.

    For each overlap point p, ``values.flat[target[p]]`` (a point of curve i whose x lies inside
    curve j's finite x range) is compared with ``(1 - frac[p]) * values.flat[left[p]] +
    frac[p] * values.flat[right[p]]``, curve j linearly interpolated in log x. Precomputing the
    indices once per (mu, NaN pattern) lets one gather evaluate the quality for every bootstrap
    replicate at once. Pairs with fewer than MIN_OVERLAP points are left out. Returns None if no
    pair remains.
    """
    n_w, n_l = mask.shape
    flat = np.flatnonzero(mask.ravel())  # row-major: grouped by curve, ascending x within a curve
    row = flat // n_l
    x = log_tau[flat % n_l] - mu * log_tw[row]
    count = np.bincount(row, minlength=n_w)
    last = np.cumsum(count) - 1  # position in `flat` of each curve's last point
    first = last - count + 1
    curves = np.flatnonzero(count >= 2)  # a curve needs 2 points to be interpolated
    if curves.size == 0:
        return None
    # One sorted key array for all curves (curve j's x shifted by j * span) turns "where does x_p
    # fall in curve j" for every (point p, curve j) into a single searchsorted.
    x0 = x.min()
    span = float(x.max() - x0) + 1.0
    keys = row * span + (x - x0)
    p = np.repeat(np.arange(flat.size), curves.size)
    j = np.tile(curves, flat.size)
    xp = x[p]
    inside = (row[p] != j) & (xp >= x[first[j]]) & (xp <= x[last[j]])
    p, j, xp = p[inside], j[inside], xp[inside]
    if p.size == 0:
        return None
    pos = np.searchsorted(keys, j * span + (xp - x0), side="right") - 1
    left = np.clip(pos, first[j], last[j] - 1)
    frac = np.clip((xp - x[left]) / (x[left + 1] - x[left]), 0.0, 1.0)
    # keep only pairs (curve of p, j) that overlap on enough points
    pair = row[p] * n_w + j
    keep = np.bincount(pair, minlength=n_w * n_w)[pair] >= MIN_OVERLAP
    if not keep.any():
        return None
    return flat[p[keep]], flat[left[keep]], flat[left[keep] + 1], frac[keep]


def _qualities(op, flat_values: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """Quality of each column of ``flat_values`` [W*L, B] for one operator; inf if op is None."""
    if op is None:
        return np.full(flat_values.shape[1], np.inf)
    target, left, right, frac = op
    n = target.size
    if flat_values.shape[1] <= 8:
        f = frac[:, None]
        diff = flat_values[target] - ((1.0 - f) * flat_values[left] + f * flat_values[right])
    else:
        # Many bootstrap columns: a sparse difference operator (3 entries a row) is ~5x faster than
        # gathering and combining three dense [n, B] copies.
        rows = np.tile(np.arange(n), 3)
        data = np.concatenate((np.ones(n), frac - 1.0, -frac))
        op_matrix = scipy.sparse.csr_matrix((data, (rows, np.concatenate((target, left, right)))),
                                            shape=(n, flat_values.shape[0]))
        diff = op_matrix @ flat_values
    return np.einsum("ij,ij->j", diff, diff) / n / variance


def _master_qualities(log_tw, log_tau, mask, flat_values: np.ndarray, variance: np.ndarray, mu: float) -> np.ndarray:
    """Master-curve quality [B] of each column of ``flat_values`` [W*L, B] (all with NaN pattern ``mask``):
    the mean squared residual of the least-squares polynomial y = P(log tau - mu log t_w) of degree
    ``MASTER_DEGREE`` through every measured point, over the column's variance; inf with too few points."""
    flat = np.flatnonzero(mask.ravel())
    if flat.size <= MASTER_DEGREE + 1:
        return np.full(flat_values.shape[1], np.inf)
    row, col = np.divmod(flat, mask.shape[1])
    x = log_tau[col] - mu * log_tw[row]
    half = 0.5 * float(x.max() - x.min()) or 1.0
    # Chebyshev basis on [-1, 1] for conditioning; the space it spans, hence the residual, is the same
    # for any affine rescaling of x, so the rescaling (which moves with mu) leaves the quality smooth
    basis = np.polynomial.chebyshev.chebvander((x - 0.5 * float(x.max() + x.min())) / half, MASTER_DEGREE)
    y = flat_values[flat]
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    residual = y - basis @ coef
    return np.einsum("ij,ij->j", residual, residual) / flat.size / variance


def _master_best(log_tw, log_tau, mask, flat_values, variance, grid) -> np.ndarray:
    """Best mu [B] of each column by the master-curve quality: the grid scan, refined between the best
    point's neighbours (the quality is smooth there)."""
    curves = np.stack([_master_qualities(log_tw, log_tau, mask, flat_values, variance, mu) for mu in grid])
    out = np.full(flat_values.shape[1], np.nan)
    for b in range(flat_values.shape[1]):
        if not np.isfinite(curves[:, b]).any():
            continue
        k = int(np.argmin(curves[:, b]))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)]
        column, var = flat_values[:, b:b + 1], variance[b:b + 1]
        res = scipy.optimize.minimize_scalar(
            lambda mu: float(_master_qualities(log_tw, log_tau, mask, column, var, mu)[0]), bounds=(lo, hi),
            method="bounded", options={"xatol": 1e-6})
        out[b] = float(res.x) if res.fun <= curves[k, b] else float(grid[k])
    return out


def _finite_variance(flat_values: np.ndarray) -> np.ndarray:
    """Variance of the finite entries of each column; a constant column cannot define a collapse."""
    var = np.nanvar(flat_values, axis=0)
    if np.any(~(var > 0)):
        raise ValueError("values are constant (zero variance over all finite entries); the collapse quality is "
                         "undefined -- pass a two-time observable that varies with tau")
    return var


def collapse_quality(t_w, tau, values, mu) -> float:
    """Dimensionless misfit of the curves ``values[i, :]`` plotted against ``x = tau / t_w[i]**mu``.

    For every ordered pair of curves (i, j), curve j is interpolated (linearly in ``log x``, values
    on a linear scale; across interior NaN gaps too) at those finite points of curve i whose ``x``
    lies inside curve j's finite ``x`` range; pairs that overlap on fewer than 2 points are skipped.
    The quality is the mean over all these overlap points of the squared difference, divided by the
    variance of all finite entries of ``values``: 0 is a perfect collapse, ~1 means the curves
    disagree as much as the data vary. Returns ``inf`` if no pair overlaps on at least 2 points.
    Differences are on a linear scale, so for an observable spanning decades (an MSD) the largest
    values dominate: pass its log to let every decade count.

    ``t_w``: [W] positive; ``tau``: [L] positive, strictly increasing; ``values``: [W, L], NaN where
    not measured; ``mu``: the aging exponent.
    """
    t_w, tau, values = _validate(t_w, tau, values, replicas=False)
    mu = float(mu)
    if not math.isfinite(mu):
        raise ValueError(f"mu must be a finite number, got {mu!r}")
    mask = np.isfinite(values)
    flat = values.reshape(-1, 1)
    op = _overlap_operator(np.log(t_w), np.log(tau), mask, mu)
    return float(_qualities(op, flat, _finite_variance(flat))[0])


# --------------------------------------------------------------------------------------------------
# best mu


@dataclasses.dataclass(frozen=True)
class CollapseFit:
    """Best aging exponent of a two-time observable; see :func:`best_collapse`."""

    mu: float
    mu_ci: tuple[float, float]          # bootstrap percentile interval over replicas (NaN with one replica)
    quality: float                      # collapse_quality at mu
    quality_at_zero: float              # at mu = 0 (no aging: curves vs tau alone), for contrast
    mu_grid: np.ndarray = dataclasses.field(compare=False)
    quality_curve: np.ndarray = dataclasses.field(compare=False)  # quality of the ensemble mean on mu_grid
    confidence: float
    mu_master: float = math.nan                         # the master-curve (smooth) estimate
    mu_master_ci: tuple[float, float] = (math.nan, math.nan)  # its bootstrap interval over replicas

    @property
    def mu_flat_range(self) -> tuple[float, float]:
        """The contiguous range of grid mu around the minimum where the quality is within 10% of it.

        The bootstrap interval measures sampling noise only; the minimum is often shallow (and the
        quality only piecewise smooth in mu), so this range is the honest systematic uncertainty.
        """
        curve = np.asarray(self.quality_curve)
        if not np.isfinite(curve).any():
            return (math.nan, math.nan)
        k = int(np.nanargmin(curve))
        limit = 1.1 * max(min(curve[k], self.quality), 0.0)
        lo = k
        while lo > 0 and curve[lo - 1] <= limit:
            lo -= 1
        hi = k
        while hi < curve.size - 1 and curve[hi + 1] <= limit:
            hi += 1
        return (float(self.mu_grid[lo]), float(self.mu_grid[hi]))

    def summary(self) -> str:
        lo, hi = self.mu_ci
        ci = ("no CI (single replica)" if math.isnan(lo)
              else f"[{lo:.3f}, {hi:.3f}] ({self.confidence * 100:g}% CI)")
        flat = self.mu_flat_range
        text = (f"mu = {self.mu:.3f} {ci}, quality within 10% of its minimum for mu in [{flat[0]:.2f}, {flat[1]:.2f}]; "
                f"collapse quality {self.quality:.3g} vs {self.quality_at_zero:.3g} at mu = 0 (no aging)")
        if math.isfinite(self.mu_master):
            lo, hi = self.mu_master_ci
            text += (f"; master-curve estimate (smooth in mu) {self.mu_master:.3f}"
                     + (f" [{lo:.3f}, {hi:.3f}]" if math.isfinite(lo) else ""))
        return text


def _quality_grid(log_tw, log_tau, mask, flat_values, variance, mu_grid) -> np.ndarray:
    """Quality [G, B] of every column of ``flat_values`` (all sharing NaN pattern ``mask``) on the grid."""
    return np.stack([_qualities(_overlap_operator(log_tw, log_tau, mask, mu), flat_values, variance)
                     for mu in mu_grid])


def _refine(log_tw, log_tau, mask, flat_column, variance, mu_grid, curve) -> tuple[float, float]:
    """(mu, quality): best grid point, refined by a bounded scalar minimisation between its neighbours.

    Returns (nan, inf) when no grid point gives an overlap. The quality is only piecewise smooth in
    mu (points enter and leave the overlap ranges), so the refined point is kept only if it is
    actually better than the grid point.
    """
    if not np.isfinite(curve).any():
        return math.nan, math.inf
    k = int(np.argmin(curve))
    lo, hi = mu_grid[max(k - 1, 0)], mu_grid[min(k + 1, mu_grid.size - 1)]
    best_mu, best_q = float(mu_grid[k]), float(curve[k])

    def objective(mu):
        q = _qualities(_overlap_operator(log_tw, log_tau, mask, mu), flat_column, variance)[0]
        return q if np.isfinite(q) else 1e300  # Brent needs finite values

    res = scipy.optimize.minimize_scalar(objective, bounds=(lo, hi), method="bounded",
                                         options={"xatol": 1e-5 * max(hi - lo, 1e-12)})
    if res.fun < best_q:
        best_mu, best_q = float(res.x), float(res.fun)
    return best_mu, best_q


def _check_grid(mu_grid) -> np.ndarray:
    grid = np.asarray(mu_grid, dtype=float)
    if grid.ndim != 1 or grid.size < 3 or not np.all(np.isfinite(grid)) or np.any(np.diff(grid) <= 0):
        raise ValueError(f"mu_grid must be a strictly increasing 1-D array of at least 3 finite values "
                         f"(e.g. np.linspace(0, 2, 201)), got shape {grid.shape}")
    return grid


def best_collapse(t_w, tau, values, *, mu_grid=None, n_boot: int = 200, confidence: float = 0.95,
                  seed: int = 0) -> CollapseFit:
    """Aging exponent ``mu`` that best collapses ``values`` onto a function of ``tau / t_w**mu``.

    ``values``: [W, L, replica] (or [W, L] = one replica), NaN where not measured. The ensemble mean
    over replicas (NaN ignored) is scored with :func:`collapse_quality` on ``mu_grid`` (default
    ``np.linspace(0, 2, 201)``); the best grid point is refined by a bounded
    ``scipy.optimize.minimize_scalar`` between its two grid neighbours, so ``mu`` stays inside the
    grid's range. ``quality_curve`` is the grid scan, ``quality_at_zero`` the quality at ``mu = 0``
    (curves against tau alone): a ratio ``quality / quality_at_zero`` far below 1 is the evidence for
    aging.

    ``mu_ci``: percentile interval at ``confidence`` of the best ``mu`` (same grid + refinement) of
    ``n_boot`` bootstrap ensembles, each resampling the replicas with replacement
    (``numpy.random.default_rng(seed)``); a replica is drawn whole, with all its (t_w, tau) entries,
    so correlations within a replica are kept. With a single replica there is nothing to resample
    and ``mu_ci`` is (nan, nan). Raises ``ValueError`` if no ``mu`` of the grid gives two curves
    that overlap on at least 2 points.
    """
    t_w, tau, values = _validate(t_w, tau, values, replicas=True)
    grid = np.linspace(0.0, 2.0, 201) if mu_grid is None else _check_grid(mu_grid)
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer (e.g. 200), got {n_boot!r}")
    n_boot = int(n_boot)
    n_w, n_l, n_rep = values.shape
    log_tw, log_tau = np.log(t_w), np.log(tau)

    # Replicas as columns: the ensemble mean of any resample is one matrix product with its counts.
    y = values.reshape(n_w * n_l, n_rep)
    finite = np.isfinite(y)
    y0 = np.where(finite, y, 0.0)
    n_fin = finite.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = y0.sum(axis=1) / n_fin
    mean[n_fin == 0] = np.nan
    mean = mean[:, None]
    mask = np.isfinite(mean[:, 0]).reshape(n_w, n_l)
    variance = _finite_variance(mean)

    curve = _quality_grid(log_tw, log_tau, mask, mean, variance, grid)[:, 0]
    if not np.isfinite(curve).any():
        raise ValueError("no mu in mu_grid makes two curves overlap on at least 2 points; extend tau (more decades) "
                         "or widen mu_grid")
    mu, quality = _refine(log_tw, log_tau, mask, mean, variance, grid, curve)
    q0 = float(_qualities(_overlap_operator(log_tw, log_tau, mask, 0.0), mean, variance)[0])

    mu_master = float(_master_best(log_tw, log_tau, mask, mean, variance, grid)[0])
    master_ci = (math.nan, math.nan)
    tail = (1.0 - c) / 2.0
    if n_rep == 1:
        ci = (math.nan, math.nan)
    else:
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(n_rep, np.full(n_rep, 1.0 / n_rep), size=n_boot).astype(float).T  # [R, B]
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (y0 @ counts) / (finite.astype(float) @ counts)  # [W*L, B], NaN where no drawn replica measured
        patterns = np.isfinite(boot)
        mus = np.full(n_boot, np.nan)
        masters = np.full(n_boot, np.nan)
        # Resamples that miss every replica measured at some (t_w, tau) have a different NaN pattern,
        # hence different overlap operators: group the replicates by pattern (usually just one group).
        _, group = np.unique(patterns.T, axis=0, return_inverse=True)
        for g in np.unique(group):
            cols = np.flatnonzero(group == g)
            gmask = patterns[:, cols[0]].reshape(n_w, n_l)
            if gmask.sum() < 2:
                continue
            vals = boot[:, cols]
            var = np.nanvar(vals, axis=0)
            good = var > 0
            cols, vals, var = cols[good], vals[:, good], var[good]
            if cols.size == 0:
                continue
            curves = _quality_grid(log_tw, log_tau, gmask, vals, var, grid)
            for b in range(cols.size):
                mus[cols[b]] = _refine(log_tw, log_tau, gmask, vals[:, b:b + 1], var[b:b + 1], grid, curves[:, b])[0]
            masters[cols] = _master_best(log_tw, log_tau, gmask, vals, var, grid)
        masters = masters[np.isfinite(masters)]
        if masters.size:
            master_ci = tuple(float(v) for v in np.quantile(masters, [tail, 1.0 - tail]))
        mus = mus[np.isfinite(mus)]
        if mus.size == 0:
            ci = (math.nan, math.nan)
        else:
            lo, hi = np.quantile(mus, [tail, 1.0 - tail])
            ci = (float(lo), float(hi))

    grid = grid.copy()
    grid.setflags(write=False)
    curve.setflags(write=False)
    return CollapseFit(mu=mu, mu_ci=ci, quality=quality, quality_at_zero=q0, mu_grid=grid, quality_curve=curve,
                       confidence=c, mu_master=mu_master, mu_master_ci=master_ci)
