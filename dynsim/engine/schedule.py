"""Record schedules: the steps at which observables are measured."""
import numpy as np


def record_steps(steps: int, n_records: int, spacing: str = "log") -> np.ndarray:
    """Sorted unique record steps in [0, steps], always containing 0 and ``steps``.

    ``log``: 0 plus ``n_records - 1`` points log-spaced from 1 to ``steps``, rounded to integers
    (early duplicates collapse, so fewer records than asked can result on short runs).
    ``linear``: ``n_records`` evenly spaced steps.
    """
    if spacing == "log":
        inner = np.round(np.logspace(0.0, np.log10(steps), max(n_records - 1, 1)))
        points = np.concatenate(([0], inner, [steps]))
    elif spacing == "linear":
        points = np.round(np.linspace(0, steps, n_records))
    else:
        raise ValueError(f"unknown spacing {spacing!r}; allowed: 'log', 'linear'")
    return np.unique(np.clip(points, 0, steps).astype(np.int64))


def two_time_grid(steps: int, n_waits: int, n_lags: int) -> tuple[np.ndarray, np.ndarray]:
    """Waiting times t_w and lags tau (in steps), both log-spaced, with t_w + tau <= steps.

    t_w runs from max(1, steps // 1000) to steps // 2, tau from 1 to steps - max(t_w): every pair
    fits in the run, and the largest lag is as long as the longest wait (tau / t_w spans 1e-3..1e3
    on a long run). Rounding can merge early points, so fewer than asked can come back.
    """
    if n_waits == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    last_wait = max(1, steps // 2)
    first_wait = min(max(1, steps // 1000), last_wait)
    waits = np.unique(np.round(np.geomspace(first_wait, last_wait, n_waits)).astype(np.int64))
    max_lag = max(1, steps - int(waits[-1]))
    lags = np.unique(np.round(np.geomspace(1, max_lag, n_lags)).astype(np.int64))
    return waits, lags


def schedule(steps: int, n_records: int, spacing: str, waits: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """The record steps: the regular schedule plus every t_w and t_w + tau of the two-time grid."""
    base = record_steps(steps, n_records, spacing)
    if waits.size == 0:
        return base
    pairs = (waits[:, None] + lags[None, :]).ravel()
    return np.unique(np.concatenate((base, waits, pairs[pairs <= steps])))
