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
