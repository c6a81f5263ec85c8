"""Analysis of max-norm chain files (the wormhole paper's collapse, degeneracy and wormhole).

Pure functions of the arrays that ``dynsim.store.ChainReader`` returns ([layer, replica, probe]
measures), and ``chain_section``, which draws the figures and writes the report lines:

* collapse: mean |cos(H_l u, H_l v)| against depth, per probe group;
* the angular distance d = angle / pi: histograms at several depths (unimodal at 0.5 at the input
  for random probes, split towards {0, 1} with depth) and the fraction of probes within 0.05 of
  0 or 1 ("collapsed");
* norm growth: the training input's squared gain per layer against the exact expectation of
  ``dynsim.theory.chain`` (sum of squares of the k selected of n standard normal scores);
* the wormhole: recovery error |m_hat - m| / |m| against depth;
* the flip-label experiment: d of the data probes and of their negatives, and their
  decidability index |mu1 - mu2| / sqrt((s1^2 + s2^2) / 2) against depth.
"""
import dataclasses
import warnings
from pathlib import Path

import numpy as np

from .figures import gallery, save

COLLAPSED_WITHIN = 0.05  # d within this of 0 or 1 counts as collapsed onto +-H u


def decidability(a, b) -> float:
    """|mu_a - mu_b| / sqrt((s_a^2 + s_b^2) / 2) of two samples of scores (NaNs ignored); NaN if both are constant."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size < 2 or b.size < 2:
        raise ValueError(f"decidability needs at least two finite scores in each sample, got {a.size} and {b.size}")
    spread = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2.0)
    if spread == 0.0:
        return float("nan") if a.mean() == b.mean() else float("inf")
    return float(abs(a.mean() - b.mean()) / spread)


def _nan_quiet(func, values, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(values, axis=axis)


def mean_abs_cosine(cosine: np.ndarray, mask=None) -> np.ndarray:
    """[layer]: mean over replicas and (masked) probes of |cos|."""
    values = np.abs(cosine if mask is None else cosine[..., mask])
    return _nan_quiet(np.nanmean, values.reshape(values.shape[0], -1), axis=1)


def collapsed_fraction(distance: np.ndarray, mask=None, within: float = COLLAPSED_WITHIN) -> np.ndarray:
    """[layer]: fraction of (replica, probe) pairs whose d is within ``within`` of 0 or 1."""
    d = distance if mask is None else distance[..., mask]
    d = d.reshape(d.shape[0], -1)
    finite = np.isfinite(d)
    hit = finite & ((d <= within) | (d >= 1.0 - within))
    return hit.sum(axis=1) / np.maximum(finite.sum(axis=1), 1)


def squared_gain(train_log_gain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per layer l >= 1: mean over replicas of |W_l e_{l-1}|^2 and its standard error ([layer - 1] each)."""
    s = np.exp(2.0 * train_log_gain[1:])
    n = s.shape[1]
    return s.mean(axis=1), s.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.full(s.shape[0], np.nan)


def flip_label_decidability(distance: np.ndarray, groups: np.ndarray, first=0, second=1) -> np.ndarray:
    """[layer]: decidability between the d of probe group ``first`` (data) and ``second`` (negated)."""
    a, b = distance[..., groups == first], distance[..., groups == second]
    return np.array([decidability(a[layer], b[layer]) for layer in range(distance.shape[0])])


def angle_to_axis(distance: np.ndarray) -> np.ndarray:
    """The angle (radians) between H_l v and the nearer of +-H_l u: pi min(d, 1 - d)."""
    return np.pi * np.minimum(distance, 1.0 - distance)


def angle_decay(distance: np.ndarray, first_layer: int, *, floor: float = 1e-12, n_boot: int = 200,
                seed: int = 0) -> tuple[float, tuple[float, float]]:
    """Per-layer factor by which the median angle to +-H_l u shrinks, and a 95 % bootstrap interval.

    Least squares of log median angle against l over layers first_layer.. (those whose median is
    above ``floor``: below it the angle is rounding); the interval resamples chains.
    """
    theta = angle_to_axis(distance)
    layers = np.arange(distance.shape[0])

    def factor(th):
        med = _nan_quiet(np.nanmedian, th.reshape(th.shape[0], -1), axis=1)
        use = (layers >= first_layer) & (med > floor)
        if use.sum() < 2:
            return float("nan")
        return float(np.exp(np.polyfit(layers[use], np.log(med[use]), 1)[0]))

    rng = np.random.default_rng(seed)
    replicas = distance.shape[1]
    boot = [factor(theta[:, rng.integers(0, replicas, replicas)]) for _ in range(n_boot)]
    return factor(theta), tuple(np.nanquantile(boot, [0.025, 0.975]))


def typical_angle_factor(k: int, train_log_gain: np.ndarray) -> float:
    """Prediction for ``angle_decay`` of a linear chain at small angles: exp((E log chi^2_{k-1} - E log S) / 2).

    At small angles one layer maps tan^2 theta to about chi^2_{k-1} / S (``dynsim.theory.chain``), so
    the typical (median) angle shrinks by exp(E[log chi^2_{k-1}] / 2 - E[log S] / 2) per layer,
    with E[log chi^2_{k-1}] = psi((k - 1) / 2) + log 2 exactly and E[log S] (no closed form known to
    us) measured from the training input's own gains, log S = 2 log |W_l e_{l-1}|: a prediction of
    the probes' angles from data that never involve a probe.
    """
    from scipy.special import digamma

    mean_log_s = 2.0 * float(np.mean(train_log_gain[1:]))
    return float(np.exp(0.5 * (digamma((k - 1) / 2.0) + np.log(2.0) - mean_log_s)))


def median_band(values: np.ndarray, mask=None) -> np.ndarray:
    """[3, layer]: 10 %, 50 %, 90 % quantiles over replicas and (masked) probes."""
    v = values if mask is None else values[..., mask]
    return _nan_quiet(lambda x, axis: np.nanquantile(x, [0.1, 0.5, 0.9], axis=axis), v.reshape(v.shape[0], -1), axis=1)


def readout_ends(squared: np.ndarray, *, within: float = COLLAPSED_WITHIN, n_boot: int = 1000, seed: int = 0):
    """Fractions of (chain, probe) pairs whose squared distance ends within ``within`` of 0 and of 1/4
    ([replica, probe] at one layer), each with a 95 % percentile interval from a bootstrap over chains
    (the independent unit: a chain's probes share its weights)."""
    def ends(x):
        return np.array([np.mean(x < within), np.mean(np.abs(x - 0.25) < within)])
    rng = np.random.default_rng(seed)
    boot = np.array([ends(squared[rng.integers(0, len(squared), len(squared))]) for _ in range(n_boot)])
    return ends(squared), np.percentile(boot, [2.5, 97.5], axis=0)


def _readout_ends(squared, groups, present, depth, numbers) -> list[str]:
    lines = [f"Read-out through relu (the authors' relu chain): at l = {depth}, pairs whose squared distance "
             f"|relu(u) - relu(v)|^2 / 4 ends near 0 or near 1/4 (within {COLLAPSED_WITHIN}; 95 % interval, "
             "bootstrap over chains):", ""]
    for g, name in present:
        (zero, quarter), (low, high) = readout_ends(squared[:, groups == g])
        numbers[f"readout_ends_{name}"] = (zero, quarter)
        lines.append(f"- {name}: at 0 {zero:.3f} [{low[0]:.3f}, {high[0]:.3f}], at 1/4 {quarter:.3f} "
                     f"[{low[1]:.3f}, {high[1]:.3f}]")
    return lines + [""]


@dataclasses.dataclass
class ChainSummary:
    path: str
    label: str
    lines: list
    numbers: dict


def _layers_to_show(depth: int) -> list[int]:
    picks = sorted({0, 1, 2, 4, depth // 2, depth})
    return [p for p in picks if p <= depth]


def chain_section(path, out_dir, plt, group=None) -> ChainSummary:
    """Figures and report lines of one chain file (or of one point ``group`` of a merged sweep of them);
    ``lines`` end with the figures' images."""
    label, lines, numbers, figures = chain_parts(path, out_dir, plt, group)
    return ChainSummary(str(path), label, lines + gallery(figures), numbers)


def chain_parts(path, out_dir, plt, group=None, heading="##", title=None) -> tuple[str, list[str], dict, list[str]]:
    """(label, report lines without the images, numbers, figure paths) of one chain file or point
    ``group``. Its title is ``heading`` (the markdown level: a point of a sweep sits one level down),
    ``title`` (default: the stem its figures are named by) and the chain's label."""
    out_dir = Path(out_dir)
    from dynsim.store import ChainReader
    from dynsim.theory.chain import expected_squared_gain

    with ChainReader(path, group) as rd:
        m, status, inputs = rd.model_attrs, rd.status, rd.inputs()
        if rd.replicas_done < 2:
            where = f"{path}" + (f" group '{group}'" if group else "")
            raise ValueError(f"{where}: {rd.replicas_done} chains written; a report needs at least 2")
        cosine = rd.measure("cosine")
        distance = rd.measure("angular_distance")
        wormhole = rd.measure("wormhole_error")
        gains = rd.train_log_gain()
        alpha = rd.alpha
        # files written before 2026-12-04 have no squared distance
        squared = rd.measure("squared_distance") if "squared_distance" in rd.measure_names else None
    stem = Path(path).stem + (f"_{group.replace('/', '_')}" if group else "")
    depth, k, n = int(m["depth"]), int(m["width"]), int(m["candidates"])
    groups, names = inputs["probe_group"], inputs["group_names"]
    present = [(g, names[g]) for g in range(len(names)) if np.any(groups == g)]
    label = f"maxnorm_chain k={k} n={n} L={depth} {m['selection']}/{m['layer_output']} ({inputs['source']})"
    layers = np.arange(depth + 1)
    numbers = {}
    lines = [f"{heading} {title or stem}: {label}", "",
             f"{rd.replicas_done} chains ({status['code']}), probes: "
             + ", ".join(f"{name} {int(np.sum(groups == g))}" for g, name in present) + ".", ""]
    figures = []

    # collapse
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for g, name in present:
        curve = mean_abs_cosine(cosine, groups == g)
        ax.plot(layers, curve, "o-", ms=3, label=f"{name}: mean |cos|")
        numbers[f"mean_abs_cos_{name}"] = curve
        frac = collapsed_fraction(distance, groups == g)
        numbers[f"collapsed_fraction_{name}"] = frac
    ax.set(xlabel="layer l", ylabel="mean |cos(H_l u, H_l v)|", title="collapse of output features", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    figures.append(save(fig, out_dir / f"{stem}_collapse.png"))
    lines.append("| layer | " + " | ".join(f"mean abs cos ({name}) | collapsed ({name})" for _, name in present) + " |")
    lines.append("|---" * (1 + 2 * len(present)) + "|")
    for layer in _layers_to_show(depth):
        cells = []
        for _, name in present:
            cells += [f"{numbers[f'mean_abs_cos_{name}'][layer]:.4f}", f"{numbers[f'collapsed_fraction_{name}'][layer]:.3f}"]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines += ["", f"(collapsed: d within {COLLAPSED_WITHIN} of 0 or 1, d = angle / pi.)", ""]
    if m["layer_output"] == "relu_readout" and squared is not None:
        lines += _readout_ends(squared[depth], groups, present, depth, numbers)

    # d histograms
    shown = _layers_to_show(depth)
    fig, axes = plt.subplots(1, len(shown), figsize=(2.2 * len(shown), 2.6), sharey=True)
    bins = np.linspace(0, 1, 41)
    for ax, layer in zip(np.atleast_1d(axes), shown):
        for g, name in present:
            d = distance[layer][:, groups == g].ravel()
            ax.hist(d[np.isfinite(d)], bins=bins, density=True, histtype="step", label=name)
        ax.set(title=f"l = {layer}", xlabel="d")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    figures.append(save(fig, out_dir / f"{stem}_distance_hist.png"))

    # norm growth against the exact expectation
    mean_s, se_s = squared_gain(gains)
    theory = expected_squared_gain(k, n, m["selection"])
    numbers["squared_gain"] = (mean_s, se_s, theory)
    pooled = float(mean_s.mean())
    pooled_se = float(np.exp(2.0 * gains[1:]).std(ddof=1) / np.sqrt(gains[1:].size))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.errorbar(layers[1:], mean_s, yerr=se_s, fmt="o", ms=3, label="simulated mean, +-1 s.e.")
    ax.axhline(theory, color="k", ls="--", label=f"exact E[S] = {theory:.4g}")
    ax.set(xlabel="layer l", ylabel="|W_l e_(l-1)|^2 (training input)", title="norm growth per layer")
    ax.legend(fontsize=8)
    figures.append(save(fig, out_dir / f"{stem}_norm_growth.png"))
    lines.append(f"Squared norm gain per layer of the training input: simulated {pooled:.5g} +- {pooled_se:.2g} "
                 f"(mean over {gains[1:].size} layer-replicas), exact expectation {theory:.5g} "
                 f"(deviation {(pooled - theory) / pooled_se:+.2f} s.e.); norm growth factor about "
                 f"{np.sqrt(theory):.4g} per layer.")
    lines.append("")
    if m["layer_output"] in ("linear", "normalised") and depth >= 4:
        from dynsim.theory.chain import collapse_factor

        fitted, (lo, hi) = angle_decay(distance, depth // 2)
        typical = typical_angle_factor(k, gains)
        ratio = float(np.sqrt(collapse_factor(k, n, m["selection"])))
        numbers["angle_decay"] = (fitted, lo, hi, typical, ratio)
        lines.append(f"Collapse rate: the median angle between H_l v and +-H_l u shrinks per layer by {fitted:.4f} "
                     f"[{lo:.4f}, {hi:.4f}] (fit over l = {depth // 2}..{depth}, 95 % bootstrap over chains); "
                     f"typical-chain prediction exp((E log chi2_(k-1) - E log S)/2) = {typical:.4f} (E log S from the "
                     f"training input's gains), ratio-of-expectations sqrt((k-1)/E[S]) = {ratio:.4f}.")
        lines.append("")

    # wormhole: keys that end on the training input's side (d < 1/2 at the last layer) are the
    # ones it joins; keys collapsing onto -H u give |a - b| -> 2, error -> 2 alpha / |m|
    fig, ax = plt.subplots(figsize=(5, 3.6))
    lines.append(f"Wormhole recovery error |m_hat - m| / |m| (alpha = {alpha:g}), median over the (chain, key) "
                 "pairs that end on the training input's side (d < 1/2 at the last layer), and that share:")
    lines.append("")
    lines.append("| layer | " + " | ".join(name for _, name in present) + " |")
    lines.append("|---" * (1 + len(present)) + "|")
    for g, name in present:
        same_side = distance[depth][:, groups == g] < 0.5
        err = wormhole[..., groups == g][:, same_side]  # [layer, pairs]
        share = float(same_side.mean())
        band = median_band(err[:, :, None]) if err.shape[1] else np.full((3, depth + 1), np.nan)
        numbers[f"wormhole_{name}"] = band
        numbers[f"wormhole_share_{name}"] = share
        ax.plot(layers, band[1], "o-", ms=3, label=f"{name} keys (median, {share:.0%} of pairs)")
        ax.fill_between(layers, band[0], band[2], alpha=0.2)
    for layer in shown:
        lines.append(f"| {layer} | " + " | ".join(f"{numbers[f'wormhole_{name}'][1][layer]:.3g}" for _, name in present)
                     + " |")
    lines.append("| share of pairs | " + " | ".join(f"{numbers[f'wormhole_share_{name}']:.3f}" for _, name in present)
                 + " |")
    ax.set(yscale="log", xlabel="layer l", ylabel="|m_hat - m| / |m|", title="wormhole recovery error")
    ax.legend(fontsize=8)
    figures.append(save(fig, out_dir / f"{stem}_wormhole.png"))

    # flip-label
    if np.any(groups == 0) and np.any(groups == 1):
        dec = flip_label_decidability(distance, groups)
        numbers["flip_decidability"] = dec
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.4))
        ax0.plot(layers, dec, "o-", ms=3)
        ax0.set(xlabel="layer l", ylabel="decidability", title="data vs negated probes")
        for name, g in (("data", 0), ("negated", 1)):
            d = distance[depth][:, groups == g].ravel()
            ax1.hist(d[np.isfinite(d)], bins=bins, density=True, histtype="step", label=name)
        ax1.set(xlabel="d at the last layer", title=f"l = {depth}")
        ax1.legend(fontsize=8)
        figures.append(save(fig, out_dir / f"{stem}_flip_label.png"))
        lines.append("")
        lines.append("Flip-label experiment: decidability of d between the data probes and their negatives, "
                     + ", ".join(f"l = {layer}: {dec[layer]:.3g}" for layer in shown) + ".")
    return label, lines, numbers, figures


def _axis_text(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(value)


def chain_points_parts(path, out_dir, plt) -> tuple[list[str], dict, list[str]]:
    """A merged sweep file of chain configs: the points that did not complete, then the chain section of
    every stored point (figures named after the point's group). Returns (lines without the images,
    numbers {"points": {group: that point's numbers}, "not_completed": [...]}, figure paths)."""
    from dynsim.sweep import sweep_failures, sweep_points

    stem = Path(path).stem
    points = sweep_points(path)
    axes = list(points[0][1]) if points else []
    failures = sweep_failures(path)
    lines = [f"## chain sweep {stem}: {len(points)} completed points over {', '.join(axes) or 'no axes'}"]
    for name, values, code, message in failures:  # diverged or failed points are not merged
        where = ", ".join(f"{a} = {_axis_text(v)}" for a, v in values.items())
        lines.append(f"- point {name} ({where}) not included: {code}: {message}")
    if not points:
        lines.append("- no completed points")
    numbers = {"points": {}, "not_completed": failures}
    figures = []
    for group, values in points:
        where = ", ".join(f"{a} = {_axis_text(v)}" for a, v in values.items())
        _, body, point_numbers, point_figures = chain_parts(path, out_dir, plt, group, heading="###",
                                                            title=f"point {group.rsplit('/', 1)[-1]} ({where})")
        lines += [""] + body
        numbers["points"][group] = point_numbers
        figures += point_figures
    return lines, numbers, figures
