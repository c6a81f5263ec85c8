"""Derived quantities of a run, computed from what the file records (through ``dynsim.store`` only).

Definitions (DESIGN.md section 4 and ``shared/papers/nakazato.md``):

* response amplitude A(t): root mean square of R_t(x_p; x_s) over sources and probes, per replica;
* kernel amplitude: root mean square of the empirical NTK Theta_t(x_p, x_q) over probe pairs;
* relative kernel change |Theta_t - Theta_0|_F / |Theta_0|_F per replica (lazy regime: small);
* factorisation share: the fraction of the variance of the ensemble-mean response R[t, s, p]
  over a window of records captured by its best rank-one form A(t) K(s, p) (the squared leading
  singular value over the sum of squares): 1 when the response ages with a fixed kernel shape;
* quantities at equal loss: an ensemble-mean observable interpolated (linearly in log loss) at
  given loss levels, so that trainers reaching a loss at different times can be compared.
"""
import numpy as np


def response_amplitude(reader) -> tuple[np.ndarray, np.ndarray]:
    """(t [record], A [record, replica])."""
    response = reader.observable("response")
    return reader.times, np.sqrt(np.mean(response ** 2, axis=(2, 3)))


def kernel_amplitude(reader) -> tuple[np.ndarray, np.ndarray]:
    """(t [record], RMS of the NTK over probe pairs [record, replica])."""
    ntk = reader.observable("ntk")
    return reader.times, np.sqrt(np.mean(ntk ** 2, axis=(2, 3)))


def relative_kernel_change(reader) -> tuple[np.ndarray, np.ndarray]:
    """(t [record], |Theta_t - Theta_0|_F / |Theta_0|_F [record, replica])."""
    ntk = reader.observable("ntk")
    diff = np.sqrt(np.sum((ntk - ntk[:1]) ** 2, axis=(2, 3)))
    return reader.times, diff / np.sqrt(np.sum(ntk[:1] ** 2, axis=(2, 3)))


def factorisation_share(reader, window=None) -> float:
    """Share of the ensemble-mean response's sum of squares over the window held by its rank-one part."""
    keep = _window_mask(reader.times, window)
    return _rank_one_share(np.nanmean(reader.observable("response")[keep], axis=1))


def _rank_one_share(response: np.ndarray) -> float:
    """s_1^2 / sum s_k^2 of the [record, source * probe] matrix of an ensemble-mean response."""
    s = np.linalg.svd(response.reshape(response.shape[0], -1), compute_uv=False)
    return float(s[0] ** 2 / np.sum(s ** 2))


def factorisation_share_interval(reader, window=None, *, n_boot: int = 500, confidence: float = 0.95,
                                 seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``factorisation_share`` from a bootstrap over replicas (each resample's
    ensemble mean, then its rank-one share) of the replicas finite throughout the window (a diverged
    replica is left out whole, as the fits do); NaN with fewer than two of them."""
    keep = _window_mask(reader.times, window)
    response = reader.observable("response")[keep]  # [record, replica, source, probe]
    response = response[:, np.all(np.isfinite(response), axis=(0, 2, 3))]
    replicas = response.shape[1]
    if replicas < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    shares = [_rank_one_share(response[:, rng.integers(0, replicas, replicas)].mean(axis=1))
              for _ in range(n_boot)]
    tail = 50.0 * (1.0 - confidence)
    return (float(np.percentile(shares, tail)), float(np.percentile(shares, 100.0 - tail)))


def at_equal_loss(loss: np.ndarray, values: np.ndarray, levels) -> np.ndarray:
    """Ensemble-mean ``values`` [record, replica] at each loss level, interpolating in log(mean loss).

    Uses the records from the first time the mean loss reaches each level (the curve after its
    last rise above it); NaN for a level the run never reaches.
    """
    mean_loss = np.nanmean(loss, axis=1)
    mean_val = np.nanmean(values, axis=1)
    out = np.full(len(levels), np.nan)
    for k, level in enumerate(levels):
        below = np.flatnonzero(mean_loss <= level)
        if below.size == 0 or below[0] == 0:
            continue
        i = below[0]
        lo, hi = np.log(mean_loss[i - 1]), np.log(mean_loss[i])
        w = 0.0 if hi == lo else (np.log(level) - lo) / (hi - lo)
        out[k] = (1 - w) * mean_val[i - 1] + w * mean_val[i]
    return out


def ensemble_band(values: np.ndarray, quantiles=(0.1, 0.5, 0.9)) -> np.ndarray:
    """[len(quantiles), record] quantiles over replicas, ignoring NaN."""
    return np.nanquantile(values, quantiles, axis=1)


def _window_mask(t, window):
    if window is None:
        return t > 0
    return (t >= window[0]) & (t <= window[1])
