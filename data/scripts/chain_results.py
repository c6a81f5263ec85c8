"""The max-norm chain (section 5, the wormhole paper; issue 10 part A) from run files to the results page.

    python data/scripts/chain_results.py [--runs runs] [--results docs/results.md]

Runs ``data/configs/wormhole_{collapse,signed,relu,digits,relu_readout}.toml`` (a complete file is kept,
an interrupted one resumed), measures every chain with the functions of ``analysis.chain`` (the
report's own measures) and rewrites the block between ``<!-- chain:begin -->`` and ``<!-- chain:end -->``
of the results page: the per-config table (squared gain per layer against the exact E[S], median-angle
shrink per layer against its predictions), the per-depth tables (collapse, wormhole recovery,
flip-label decidability), the relu read-out's ends and the selection MLE statement (SymPy, as
``dynsim derive --quantity selection_mle`` prints it).

Intervals: 95 % percentile bootstraps over chains (the independent unit: a chain's probes share its
weights). Means over (chain, probe) pairs (mean |cos|, collapsed fraction, squared gain) resample the
per-chain values (every chain has the same probes, so their mean is the pooled one); medians,
decidabilities, shares and fits are recomputed on each resample of the chains (fewer resamples: they
cost a pass over all pairs each). The exact E[S] and sqrt((k - 1) / E[S]) are exact and have none.
"""
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ("collapse", "signed", "relu", "digits", "relu_readout")
LABELS = {"collapse": "collapse (magnitude, linear, Gaussian)", "signed": "signed (k most negative)",
          "relu": "relu inside the chain (dynsim's variant)", "digits": "digits (k = 64 pixels)",
          "relu_readout": "relu read-out (the authors' relu chain)"}
BEGIN, END = "<!-- chain:begin -->", "<!-- chain:end -->"
N_BOOT = 2000         # resamples of per-chain values
N_BOOT_RECOMPUTE = 200  # resamples on which a median, decidability or fit is recomputed over all pairs


def _percentiles(samples) -> tuple[float, float]:
    low, high = np.nanpercentile(np.asarray(samples, dtype=float), [2.5, 97.5], axis=0)
    return low, high


def _per_chain_interval(per_chain: np.ndarray, seed=0, n_boot=None):
    """[2, ...]: 95 % interval of the mean over chains (axis 0 of ``per_chain``), chains resampled."""
    n_boot = n_boot or N_BOOT
    rng = np.random.default_rng(seed)
    chains = per_chain.shape[0]
    means = np.array([np.nanmean(per_chain[rng.integers(0, chains, chains)], axis=0) for _ in range(n_boot)])
    return np.array(_percentiles(means))


def _recomputed_interval(statistic, arrays, seed=0, n_boot=None):
    """[2, ...]: 95 % interval of ``statistic(*arrays)`` with the chains (axis 1 of each array) resampled."""
    n_boot = n_boot or N_BOOT_RECOMPUTE
    rng = np.random.default_rng(seed)
    chains = arrays[0].shape[1]
    boot = []
    for _ in range(n_boot):
        idx = rng.integers(0, chains, chains)
        boot.append(statistic(*(a[:, idx] for a in arrays)))
    return np.array(_percentiles(boot))


def _wormhole_median(wormhole, distance):
    """[layer]: median recovery error over the (chain, key) pairs ending on the training input's side
    (d < 1/2 at the last layer), as the report takes it (``analysis.chain.median_band``)."""
    from analysis.chain import median_band

    same_side = distance[-1] < 0.5
    err = wormhole[:, same_side]
    return median_band(err[:, :, None])[1] if err.shape[1] else np.full(wormhole.shape[0], np.nan)


def measure_chain(path) -> dict:
    """Every number of the block for one chain file, each with its interval (see the module's text)."""
    from analysis import chain as ch
    from dynsim.store import ChainReader
    from dynsim.theory.chain import collapse_factor, expected_squared_gain

    with ChainReader(path) as rd:
        m, inputs, chains = rd.model_attrs, rd.inputs(), rd.replicas_done
        cosine, distance = rd.measure("cosine"), rd.measure("angular_distance")
        wormhole, gains = rd.measure("wormhole_error"), rd.train_log_gain()
        squared = rd.measure("squared_distance") if "squared_distance" in rd.measure_names else None
    depth, k, n = int(m["depth"]), int(m["width"]), int(m["candidates"])
    groups, names = inputs["probe_group"], list(inputs["group_names"])
    present = {name: g for g, name in enumerate(names) if np.any(groups == g)}
    out = dict(k=k, n=n, depth=depth, chains=chains, source=str(inputs["source"]), layer_output=m["layer_output"],
               probes={name: int(np.sum(groups == g)) for name, g in present.items()},
               layers=ch._layers_to_show(depth), groups={})

    # norm growth: the layers' gains are independent draws, a chain's mean over its layers is its value
    s = np.exp(2.0 * gains[1:])  # [layer, chain]
    mean_s, _ = ch.squared_gain(gains)
    pooled = float(mean_s.mean())
    pooled_se = float(s.std(ddof=1) / np.sqrt(s.size))
    theory = expected_squared_gain(k, n, m["selection"])
    out["squared_gain"] = dict(mean=pooled, interval=_per_chain_interval(s.mean(axis=0)[:, None])[:, 0],
                               se=pooled_se, exact=theory, deviation=(pooled - theory) / pooled_se)
    if m["layer_output"] in ("linear", "normalised") and depth >= 4:
        fitted, interval = ch.angle_decay(distance, depth // 2, n_boot=N_BOOT_RECOMPUTE)
        typical = ch.typical_angle_factor(k, gains)
        typical_interval = _recomputed_interval(lambda g: ch.typical_angle_factor(k, g), [gains], n_boot=N_BOOT)
        out["angle_decay"] = dict(fitted=fitted, interval=np.array(interval), typical=typical,
                                  typical_interval=typical_interval,
                                  ratio=float(np.sqrt(collapse_factor(k, n, m["selection"]))), first_layer=depth // 2)

    for name, g in present.items():
        mask = groups == g
        cos_g, d_g = cosine[..., mask], distance[..., mask]
        per_chain_cos = np.array([ch.mean_abs_cosine(cos_g[:, [r]]) for r in range(chains)])
        per_chain_collapsed = np.array([ch.collapsed_fraction(d_g[:, [r]]) for r in range(chains)])
        out["groups"][name] = dict(
            mean_abs_cos=ch.mean_abs_cosine(cosine, mask), mean_abs_cos_interval=_per_chain_interval(per_chain_cos),
            collapsed=ch.collapsed_fraction(distance, mask),
            collapsed_interval=_per_chain_interval(per_chain_collapsed))
        if m["layer_output"] == "linear":  # the wormhole identity m_hat = m + alpha (a - b) is the linear chain's
            worm = wormhole[..., mask]
            out["groups"][name].update(
                wormhole=_wormhole_median(worm, d_g), wormhole_interval=_recomputed_interval(_wormhole_median, [worm, d_g]),
                share=float(np.mean(d_g[-1] < 0.5)),
                share_interval=_per_chain_interval(np.mean(d_g[-1] < 0.5, axis=1)[:, None])[:, 0])
        if m["layer_output"] == "relu_readout" and squared is not None:
            ends, interval = ch.readout_ends(squared[depth][:, mask])
            out["groups"][name]["readout_ends"] = (ends, interval)
    if "data" in present and "negated" in present:
        both = (groups == present["data"]) | (groups == present["negated"])
        sub_groups = groups[both]
        out["flip"] = dict(
            decidability=ch.flip_label_decidability(distance[..., both], sub_groups),
            interval=_recomputed_interval(lambda d: ch.flip_label_decidability(d, sub_groups), [distance[..., both]]))
    return out


def _cell(value, interval, digits=3):
    return f"{value:.{digits}g} [{interval[0]:.{digits}g}, {interval[1]:.{digits}g}]"


def _fixed(value, interval, places=4):
    return f"{value:.{places}f} [{interval[0]:.{places}f}, {interval[1]:.{places}f}]"


def config_table(results: dict) -> list[str]:
    lines = ["| config | k, n, L, chains | probes | squared gain per layer: simulated [95 % CI] (+- s.e.) | exact E[S] "
             "(deviation in s.e.) | median-angle shrink per layer: fitted [95 % CI] | typical-chain prediction "
             "[95 % CI] | sqrt((k-1)/E[S]) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        g = r["squared_gain"]
        probes = ", ".join(f"{group} {count}" for group, count in r["probes"].items())
        if "angle_decay" in r:
            a = r["angle_decay"]
            shrink = (f"{_fixed(a['fitted'], a['interval'])} (l = {a['first_layer']}..{r['depth']})",
                      _fixed(a["typical"], a["typical_interval"]), f"{a['ratio']:.4f} (exact)")
        else:
            shrink = ("no linear theory: not fitted",) * 3
        lines.append(f"| {LABELS.get(name, name)} | {r['k']}, {r['n']}, {r['depth']}, {r['chains']} | {probes} | "
                     f"{g['mean']:.2f} [{g['interval'][0]:.2f}, {g['interval'][1]:.2f}] (+- {g['se']:.2f}) | "
                     f"{g['exact']:.2f} ({g['deviation']:+.2f} s.e.) | " + " | ".join(shrink) + " |")
    return lines


def _probe_words(r) -> str:
    return "other digits" if r["source"] == "digits" else f"{r['source'].capitalize()} probes"


def depth_tables(results: dict) -> list[str]:
    """Collapse (mean |cos|, collapsed fraction), wormhole error and flip-label decidability against depth."""
    layers = next(iter(results.values()))["layers"]
    header = "| run, probes | " + " | ".join(f"l = {layer}" for layer in layers) + " |"
    rule = "|---" * (1 + len(layers)) + "|"
    lines = ["**Collapse: mean |cos(H_l u, H_l v)|** over (chain, probe) pairs [95 % CI]", "", header, rule]
    linear = [name for name in results if results[name]["layer_output"] != "relu_readout"]
    for name in linear:
        gr = results[name]["groups"]["data"]
        lines.append(f"| {name}, {_probe_words(results[name])} | "
                     + " | ".join(_cell(gr["mean_abs_cos"][layer], gr["mean_abs_cos_interval"][:, layer], 4)
                                  for layer in layers) + " |")
    lines += ["", "**Collapsed fraction**: (chain, probe) pairs with d = angle / pi within 0.05 of 0 or 1 [95 % CI]", "",
              header, rule]
    for name in linear:
        gr = results[name]["groups"]["data"]
        lines.append(f"| {name}, {_probe_words(results[name])} | "
                     + " | ".join(_cell(gr["collapsed"][layer], gr["collapsed_interval"][:, layer]) for layer in layers)
                     + " |")
    lines += ["", "**Wormhole recovery error** |m_hat - m| / |m| (alpha = 1e4), median over the (chain, noise key) pairs "
              "that end on the training input's side (d < 1/2 at the last layer) [95 % CI]", "", header, rule]
    for name in linear:
        gr = results[name]["groups"].get("noise")
        if gr is None or "wormhole" not in gr or not np.all(np.isfinite(gr["wormhole"])):
            continue
        lines.append(f"| {name}: {gr['share']:.3f} [{gr['share_interval'][0]:.3f}, {gr['share_interval'][1]:.3f}] "
                     "of the uniform-noise keys on that side | "
                     + " | ".join(_cell(gr["wormhole"][layer], gr["wormhole_interval"][:, layer]) for layer in layers)
                     + " |")
    flips = [name for name in linear if "flip" in results[name]]
    if flips:
        lines += ["", "**Flip-label decidability** of d between the data probes and their negatives [95 % CI]", "",
                  header, rule]
        for name in flips:
            f = results[name]["flip"]
            lines.append(f"| {name} | " + " | ".join(_cell(f["decidability"][layer], f["interval"][:, layer])
                                                    for layer in layers) + " |")
    return lines


def readout_lines(results: dict) -> list[str]:
    lines = []
    for name, r in results.items():
        if r["layer_output"] != "relu_readout":
            continue
        lines += [f"**{LABELS[name]}** at l = {r['depth']}: (chain, probe) pairs whose squared distance "
                  "|relu(u) - relu(v)|^2 / 4 of the unit vectors ends within 0.05 of 0 and of 1/4 [95 % CI]", "",
                  "| run, probes | near 0 | near 1/4 |", "|---|---|---|"]
        for group, gr in r["groups"].items():
            (zero, quarter), (low, high) = gr["readout_ends"]
            words = "uniform-noise probes" if group == "noise" else _probe_words(r)
            lines.append(f"| {name}, {words} | {zero:.3f} [{low[0]:.3f}, {high[0]:.3f}] | "
                         f"{quarter:.3f} [{low[1]:.3f}, {high[1]:.3f}] |")
    return lines


def mle_line(k=20, n=500) -> str:
    """The selection MLE statement, derived now by SymPy (``dynsim.theory.chain.selection_likelihood``)."""
    import sympy

    from dynsim.theory.chain import selection_likelihood

    mle = selection_likelihood()
    h2 = float(mle.binary_entropy.subs(mle.q, sympy.Rational(k, n)))
    return (f"- **MLE statement** (`dynsim derive --quantity selection_mle`, derived by SymPy when this block is "
            f"written; exact, no interval): the stationarity of {mle.log_likelihood} gives theta* = {mle.theta_star}, "
            f"the second derivative there is {mle.second_derivative} (negative for k < n), and "
            f"-log2 L(theta*) / n - H2(k / n) simplifies to {mle.entropy_difference}; H2({k} / {n}) = {h2:.5f}.")


def markdown(results: dict) -> str:
    names = ", ".join(f"`runs/wormhole_{name}.h5`" for name in results)
    lines = [BEGIN, "", f"Generated by `python data/scripts/chain_results.py` from {names}, with the measures of "
             "`analysis.chain`. Intervals: 95 % percentile bootstrap over chains (a chain's probes share its weights): "
             f"{N_BOOT} resamples of the per-chain values for means, {N_BOOT_RECOMPUTE} recomputations over all pairs "
             "for medians, decidabilities and fits. E[S] (`dynsim.theory.chain.expected_squared_gain`) and "
             "sqrt((k-1)/E[S]) are exact; the typical-chain prediction exp((E log chi2_(k-1) - E log S) / 2) takes "
             "E log S from the training input's own gains, hence its interval. The shrink is fitted over the layers "
             "given, on the median angle between H_l v and +-H_l u. At l = 0 every chain sees the same training input "
             "and probes, so the input layer's values are one number with an interval of width 0; so are fractions "
             "that are 0 or 1 in every chain.", ""]
    lines += config_table(results) + [""] + depth_tables(results) + [""]
    readout = readout_lines(results)
    if readout:
        lines += readout + [""]
    lines += [mle_line(), "", END]
    return "\n".join(lines)


def main(argv=None) -> int:
    sys.path.insert(0, str(ROOT))
    from analysis.blocks import results_arguments, write_blocks
    from dynsim.kinds import ensure_run

    args = results_arguments(__doc__, ROOT, argv)
    results = {}
    for name in CONFIGS:
        path = ensure_run(ROOT / "data" / "configs" / f"wormhole_{name}.toml", args.runs / f"wormhole_{name}.h5")
        results[name] = measure_chain(path)
        print(f"{name}: measured", file=sys.stderr)
    write_blocks(args.results, {"chain": markdown(results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
