"""How a network with M outputs carves input space on the encoding task (#12; ../shared/papers/nakazato.md).

From the recorded probe outputs f_m(x_p) (``output`` [record, replica, probe, output]):

* the region map: argmax_m f_m(x_p) at every record (which output claims each probe);
* for D = 1 inputs, the boundaries: between neighbouring grid probes where the argmax changes from
  m to n, the zero of f_m - f_n by linear interpolation; a replica that has carved M regions in
  order has M - 1 boundaries (NaN otherwise), to be compared with the task's edges k / M.
"""
import warnings
from pathlib import Path

import numpy as np

from dynsim.kinds import stored_config

from .figures import save


def region_map(output: np.ndarray) -> np.ndarray:
    """[record, replica, probe]: the output claiming each probe."""
    return np.argmax(output, axis=-1)


def region_boundaries(x_grid: np.ndarray, output: np.ndarray) -> np.ndarray:
    """[..., M - 1]: boundary positions along a 1-D probe grid, in increasing order; NaN where the
    argmax does not run through 0, 1, ..., M - 1 exactly once each, in order."""
    x_grid = np.asarray(x_grid, dtype=np.float64).ravel()
    order = np.argsort(x_grid)
    x, f = x_grid[order], np.asarray(output)[..., order, :]
    m = f.shape[-1]
    lead = f.shape[:-2]
    flat_f = f.reshape((-1,) + f.shape[-2:])
    out = np.full((flat_f.shape[0], m - 1), np.nan)
    for i, g in enumerate(flat_f):
        arg = np.argmax(g, axis=1)
        change = np.flatnonzero(arg[1:] != arg[:-1])
        if len(change) != m - 1 or not np.array_equal(arg[np.r_[0, change + 1]], np.arange(m)):
            continue
        for j, k in enumerate(change):
            a, b = arg[k], arg[k + 1]
            d0, d1 = g[k, a] - g[k, b], g[k + 1, a] - g[k + 1, b]  # d0 > 0 >= d1
            out[i, j] = x[k] + (x[k + 1] - x[k]) * d0 / (d0 - d1) if d0 != d1 else x[k]
    return out.reshape(lead + (m - 1,))


def regions_section(reader, stem, out_dir, plt) -> tuple[list[str], dict, list[str]]:
    """Region map over time and the boundaries against the task's edges (D = 1)."""
    config = stored_config(reader)
    m = config.model.outputs
    out = reader.observable("output")  # [record, replica, probe, M]
    t = reader.times
    x_probe = reader.data().x_probe
    lines, numbers, figures = [], {}, []
    maps = region_map(out)
    keep = t > 0
    if config.model.input_dim == 1:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        order = np.argsort(x_probe[:, 0])
        ax.pcolormesh(x_probe[order, 0], t[keep], maps[keep][:, 0][:, order], cmap="tab10", vmin=0, vmax=9,
                      shading="nearest")
        ax.set(yscale="log", xlabel="x", ylabel="t", title=f"region map, replica 0 (M = {m})")
        for k in range(1, m):
            ax.axvline(k / m, color="w", ls=":", lw=0.8)
        figures.append(save(fig, Path(out_dir) / f"{stem}_regions.png"))
        bounds = region_boundaries(x_probe, out)  # [record, replica, M - 1]
        edges = np.arange(1, m) / m
        final = bounds[-1]
        carved = np.all(np.isfinite(final), axis=1)
        numbers["boundaries_final"] = final
        numbers["carved_fraction"] = float(carved.mean())
        err = np.abs(final[carved] - edges) if carved.any() else np.full((1, m - 1), np.nan)
        numbers["boundary_error_max"] = float(np.max(err))
        carved_over_time = np.all(np.isfinite(bounds), axis=2).mean(axis=1)  # [record]
        done = np.flatnonzero(carved_over_time == 1.0)
        numbers["carved_from_t"] = float(t[done[0]]) if done.size else float("nan")
        if done.size:
            lines.append(f"- every replica has carved the {m} regions in order from t = {t[done[0]]:.3g} on "
                         f"(first record at which all do)")
        lines.append(f"- regions: {carved.sum()}/{len(carved)} replicas carve the {m} regions in order at the end; "
                     f"boundaries (mean over them) "
                     + ", ".join(f"{v:.4f}" for v in np.nanmean(final[carved], axis=0))
                     + " against the edges " + ", ".join(f"{e:.4f}" for e in edges)
                     + f" (largest deviation {numbers['boundary_error_max']:.4f})")
        fig, ax = plt.subplots(figsize=(5, 3.6))
        with warnings.catch_warnings():  # records before the regions exist have no boundary (all NaN)
            warnings.simplefilter("ignore", RuntimeWarning)
            medians = np.nanmedian(bounds[keep], axis=1)
        for j in range(m - 1):
            ax.plot(t[keep], medians[:, j], label=f"boundary {j + 1} (median)")
            ax.axhline(edges[j], color="k", ls=":", lw=0.8)
        ax.set(xscale="log", xlabel="t", ylabel="position", title="region boundaries")
        ax.legend(fontsize=7)
        figures.append(save(fig, Path(out_dir) / f"{stem}_boundaries.png"))
    if config.model.input_dim == 2 and config.task.probe_grid:
        from dynsim.tasks import region_index

        side = int(round(np.sqrt(x_probe.shape[0])))
        truth = region_index(x_probe, m)
        correct = (maps == truth).mean(axis=2)  # [record, replica]
        numbers["grid_agreement_final"] = float(correct[-1].mean())
        lines.append(f"- region map on the {side} x {side} probe grid of [0, 1]^2: at the end "
                     f"{100 * correct[-1].mean():.1f} % of the probes are claimed by their region's output "
                     f"(mean over replicas)")
        picks = np.unique(np.round(np.geomspace(1, len(t) - 1, 4)).astype(int))
        fig, axes = plt.subplots(1, len(picks), figsize=(2.6 * len(picks), 2.8))
        for ax, k in zip(np.atleast_1d(axes), picks):
            ax.imshow(maps[k, 0].reshape(side, side), origin="lower", extent=(0, 1, 0, 1), cmap="tab10", vmin=0,
                      vmax=9)
            for e in range(1, m):
                ax.axvline(e / m, color="w", ls=":", lw=0.8)
            ax.set(title=f"t = {t[k]:.3g}", xlabel="x_0")
        figures.append(save(fig, Path(out_dir) / f"{stem}_regions_2d.png"))
    if lines:
        lines.append("")
    return lines, numbers, figures
