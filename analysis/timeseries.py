"""The generic report section of any run file: every per-replica scalar observable against time.

Works on whatever a ``dynsim.store.RunReader`` opens, whichever kind wrote it, so a new kind has a
report before it has sections of its own. For each observable whose dims are exactly
(record, replica):

* a figure of the median over replicas and its 10-90 % band against the recorded time t, on a
  log axis when the positive times span at least ``LOG_SPAN`` (two decades), else on a linear one;
  non-finite values are left out of the band;
* its value at the last committed record: the mean over the replicas where it is finite, with a
  95 % interval mean +- 1.96 standard errors (std(ddof=1) / sqrt(n) over those n replicas; none
  when n < 2), and how many replicas were skipped for being non-finite.
"""
import math
import warnings

import numpy as np

from .figures import band_plot, save

SCALAR_DIMS = ("record", "replica")
LOG_SPAN = 100.0  # t_max / t_min of the positive times from which a log time axis reads better
Z_95 = 1.96


def scalar_series_names(reader) -> list[str]:
    """The observables of an open run whose dims are exactly (record, replica), in file order."""
    return [name for name in reader.observable_names if reader.observable_dims(name) == SCALAR_DIMS]


def log_time_axis(t) -> bool:
    positive = np.asarray(t, dtype=float)
    positive = positive[positive > 0]
    return bool(positive.size >= 2 and positive.max() / positive.min() >= LOG_SPAN)


def final_interval(values) -> dict:
    """Mean over replicas of the last record of ``values`` [record, replica], skipping non-finite ones.

    Returns mean, se (std(ddof=1) / sqrt(n)), ci (mean -+ 1.96 se), n_finite and n_skipped; the
    statistics are NaN where too few replicas are finite (none for the mean, fewer than 2 for se)."""
    final = np.asarray(values, dtype=float)[-1]
    finite = final[np.isfinite(final)]
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    se = float(finite.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    return dict(mean=mean, se=se, ci=(mean - Z_95 * se, mean + Z_95 * se), n_finite=n, n_skipped=int(final.size - n))


def time_series_section(source, plt) -> tuple[list[str], dict, list[str]]:
    """Report lines, numbers ({"time_series": {name: final_interval(...)}, "time_series_log_t": bool})
    and figures of the open run of ``source`` (an ``analysis.sections.ReportSource``)."""
    rd, stem = source.reader, source.stem
    where = f"`{source.path}`" + (f" group `{source.group}`" if source.group else "")
    lines = [f"## {stem}: per-replica time series", ""]
    if rd.n_records == 0:
        return lines + [f"- file {where} has no committed records yet"], {}, []
    t = np.asarray(rd.times, dtype=float)
    log_x = log_time_axis(t)
    lines.append(f"- file {where}, status {rd.status['code']}, {rd.n_records} records to step {rd.steps[-1]} "
                 f"(t = {t[-1]:g}), {rd.attrs.get('n_replicas')} replicas")
    names = scalar_series_names(rd)
    if not names:
        return lines + ["- no observable with dims (record, replica) is recorded"], {}, []
    lines.append(f"- at the last record: mean over the finite replicas with a 95% interval, mean +- {Z_95} "
                 "standard errors (std(ddof=1) / sqrt(n) over those n replicas)")
    series, figures = {}, []
    for name in names:
        values = np.asarray(rd.observable(name), dtype=float)
        stats = final_interval(values)
        series[name] = stats
        if stats["n_finite"] >= 2:
            interval = f"95% interval [{stats['ci'][0]:.4g}, {stats['ci'][1]:.4g}]"
        else:
            interval = "no interval (fewer than 2 finite replicas)"
        lines.append(f"- {name}: mean {stats['mean']:.4g}, {interval}, over {stats['n_finite']} replicas; "
                     f"{stats['n_skipped']} non-finite replicas skipped")
        fig, ax = plt.subplots(figsize=(5, 3.6))
        with warnings.catch_warnings():  # a record where every replica is non-finite has no band: NaN, quietly
            warnings.simplefilter("ignore", RuntimeWarning)
            band_plot(ax, t, np.where(np.isfinite(values), values, np.nan), "median, 10-90%", log_x=log_x)
        ax.set(xscale="log" if log_x else "linear", xlabel="t", ylabel=name,
               title=f"{stem}: {name} over replicas")
        ax.legend(fontsize=8)
        figures.append(save(fig, source.out_dir / f"{stem}_{name}_series.png"))
    return lines, {"time_series": series, "time_series_log_t": log_x}, figures
