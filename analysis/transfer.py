"""Adversarial transfer between the replicas of one classification run (#10 part B).

``transfer_section`` (``analysis report RUN.h5 --transfer``) reads the run's final parameters, its
parameter snapshots at the waiting times (``record.two_time_waits > 0``) and its test set through
``dynsim.store``, and uses the compiled kernels of ``dynsim.adversarial`` to

* craft FGSM and PGD examples on every replica, in L_inf and L2, over a grid of budgets, and
  evaluate them on every replica: the R x R transfer matrix against eps; random perturbations of
  the same norm as the control;
* relate transfer to the replicas' input-gradient cosines, NTK alignment and class agreement at
  random points near the data: across pairs of replicas (Spearman rank correlation of the pair's
  symmetrised transfer rate with its gradient cosine, with a Mantel p-value that permutes replica
  labels and an interval from a bootstrap over replicas: pairs share replicas, so they are not
  independent samples) and across training time (the same means at every snapshot).

Budgets are in input units; the reference budget eps* of the summary is the one at which the mean
white-box success of L2 PGD is closest to 1/2.
"""
import dataclasses
from pathlib import Path

import numpy as np

from dynsim.kinds import stored_config

from . import zoo
from .figures import image_links, save

ATTACKS = (("fgsm", "linf", 1), ("pgd", "linf", 10), ("fgsm", "l2", 1), ("pgd", "l2", 10))
_STEP_FRACTION = 0.25  # PGD step as a fraction of eps: 10 steps travel 2.5 eps, enough to reach the ball's edge


@dataclasses.dataclass
class TransferResult:
    eps_l2: np.ndarray
    eps_linf: np.ndarray
    rates: dict            # attack name -> T [budget, i, j]
    control: dict          # norm -> [budget, j]
    gradient_cosine: np.ndarray
    ntk_alignment: np.ndarray
    agreement: np.ndarray
    reference: int         # index of eps* in the budget grids


def off_diagonal_mean(matrix: np.ndarray) -> float:
    r = matrix.shape[-1]
    mask = ~np.eye(r, dtype=bool)
    return float(matrix[..., mask].mean())


def pair_values(matrix: np.ndarray) -> np.ndarray:
    """The symmetrised values (M_ij + M_ji) / 2 of the pairs i < j."""
    i, j = np.triu_indices(matrix.shape[0], k=1)
    return 0.5 * (matrix[i, j] + matrix[j, i])


def analyse_transfer(model, params, x, y, threshold, *, eps_l2=None, seed=0) -> TransferResult:
    """Transfer matrices, controls and explanatory quantities for one set of replica parameters."""
    from dynsim import adversarial as adv

    d = x.shape[1]
    eps_l2 = np.geomspace(0.02, 2.0, 9) if eps_l2 is None else np.asarray(eps_l2, dtype=np.float64)
    eps_linf = eps_l2 / np.sqrt(d)  # the L_inf ball of radius eps/sqrt(D) has the L2 ball's typical reach
    rates = {}
    for kind, norm, steps in ATTACKS:
        eps = eps_linf if norm == "linf" else eps_l2
        rates[f"{kind}_{norm}"], _ = adv.transfer_matrix(model, params, x, y, eps, norm=norm, steps=steps,
                                                         step_fraction=_STEP_FRACTION, threshold=threshold)
    control = {norm: adv.control_rates(model, params, x, y, eps_linf if norm == "linf" else eps_l2, norm=norm,
                                       threshold=threshold, seed=seed) for norm in ("linf", "l2")}
    white = np.array([np.diagonal(t).mean() for t in rates["pgd_l2"]])
    reference = int(np.argmin(np.abs(white - 0.5)))
    grad_cos = adv.gradient_cosines(model, params, x)
    align = adv.ntk_alignment(model, params, x[: min(len(x), 128)])
    agree = adv.boundary_agreement(model, params, x, float(eps_l2[reference]), threshold=threshold, seed=seed)
    return TransferResult(eps_l2, eps_linf, rates, control, grad_cos, align, agree, reference)


def pair_specific(matrix: np.ndarray, iterations: int = 100) -> np.ndarray:
    """M_ij minus the additive fit mu + a_i + b_j of its off-diagonal entries (backfitting).

    A pair's transfer rate mixes how strong the source's attack is (a_i), how fragile the target is
    (b_j) and what the two share; only the last is a property of the pair. Correlating raw rates
    with pair alignments confounds them (the sign of the raw correlation changed between seeds of
    the reduced test); the residuals of both matrices compare the pair-specific parts.
    """
    m = np.asarray(matrix, dtype=np.float64)
    r = m.shape[0]
    off = ~np.eye(r, dtype=bool)
    mu = m[off].mean()
    a, b = np.zeros(r), np.zeros(r)
    for _ in range(iterations):
        res = np.where(off, m - mu - b[None, :], 0.0)
        a = res.sum(axis=1) / (r - 1)
        res = np.where(off, m - mu - a[:, None], 0.0)
        b = res.sum(axis=0) / (r - 1)
        b -= b.mean()
    return m - mu - a[:, None] - b[None, :]


def _spearman(a, b) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan"), float("nan")
    res = spearmanr(a, b)
    return float(res.statistic), float(res.pvalue)


def transfer_section(path, out_dir, plt, *, max_inputs: int = 256) -> tuple[list[str], dict]:
    """Figures and report lines of the transfer analysis of one run file."""
    from dynsim.store import RunReader

    out_dir = Path(out_dir)
    with RunReader(path) as rd:
        config = stored_config(rd)
        if not config.task.is_classification:
            raise ValueError(f"{path}: --transfer needs a classification run (task.kind = {config.task.kind!r})")
        data = rd.data()
        params = rd.dataset("params/final")
        snapshots = rd.dataset("two_time/theta_w") if rd.has_two_time else None
        waits = rd.two_time_axes()["t_w"] if rd.has_two_time else np.zeros(0)
    if not np.all(np.isfinite(params)):
        raise ValueError(f"{path}: the final parameters are not all finite (the run did not complete)")
    if params.shape[0] < 3:
        raise ValueError(f"{path}: transfer between replicas needs at least 3 replicas, the run has {params.shape[0]}")
    model = config.model
    threshold = 0.5 if config.task.labels == "01" else 0.0
    x, y = data.x_test[:max_inputs], data.y_test[:max_inputs]
    if len(x) < 8:
        raise ValueError(f"{path}: the run has {len(x)} test inputs; the transfer analysis needs at least 8")
    params = np.asarray(params, dtype=np.float64)
    res = analyse_transfer(model, params, x, y, threshold)
    stem = Path(path).stem
    e = res.reference
    numbers = {"eps_l2": res.eps_l2, "reference": e,
               # the R x R matrices and the per-target controls at eps*, for intervals over replicas
               "matrices_at_reference": {name: rates[e] for name, rates in res.rates.items()},
               "control_at_reference": {norm: control[e] for norm, control in res.control.items()}}
    lines = [f"## {stem}: adversarial transfer between {params.shape[0]} replicas", "",
             f"{len(x)} test inputs; budgets eps (L2) {res.eps_l2[0]:g}..{res.eps_l2[-1]:g}, L_inf budgets eps/sqrt(D); "
             f"PGD: 10 steps of {_STEP_FRACTION} eps. Rates among the inputs the target replica classifies correctly.",
             "", "| attack | white-box (diagonal) at eps* | transfer (off-diagonal) at eps* | random control at eps* |",
             "|---|---|---|---|"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, norm in zip(axes, ("linf", "l2")):
        eps = res.eps_linf if norm == "linf" else res.eps_l2
        for kind, style in (("fgsm", "--"), ("pgd", "-")):
            t = res.rates[f"{kind}_{norm}"]
            white = np.array([np.diagonal(m).mean() for m in t])
            cross = np.array([off_diagonal_mean(m) for m in t])
            ax.plot(eps, white, "C0" + style, label=f"{kind} white-box")
            ax.plot(eps, cross, "C1" + style, label=f"{kind} transfer")
            numbers[f"{kind}_{norm}"] = (white, cross)
            lines.append(f"| {kind.upper()} {norm} | {white[e]:.3f} | {cross[e]:.3f} | "
                         f"{res.control[norm].mean(axis=1)[e]:.3f} |")
        ax.plot(eps, res.control[norm].mean(axis=1), "k:", label="random direction")
        ax.set(xscale="log", xlabel=f"eps ({norm})", ylabel="misclassified fraction", ylim=(0, 1.02),
               title=f"{norm}: eps* = {eps[e]:.3g}")
        ax.legend(fontsize=7)
    figures = [save(fig, out_dir / f"{stem}_transfer_eps.png")]
    lines.append("")
    transfer_at = res.rates["pgd_l2"][e]
    explain = {"gradient": res.gradient_cosine, "ntk": res.ntk_alignment, "agreement": res.agreement}
    pairs_t = pair_values(transfer_at)
    pairs_g, pairs_k = pair_values(res.gradient_cosine), pair_values(res.ntk_alignment)
    # pair data: each replica is in R - 1 pairs, so the p-value permutes replica labels (a Mantel test)
    # and the interval resamples replicas, not pairs (analysis.zoo)
    symmetric = lambda m: 0.5 * (m + m.T)  # noqa: E731
    for name, matrix in explain.items():
        for suffix, t, m in (("", transfer_at, matrix), ("_pair_specific", pair_specific(transfer_at),
                                                         pair_specific(matrix))):
            rho, p = zoo.mantel(symmetric(t), symmetric(m), permutations=2000)
            numbers[f"rho_{name}{suffix}"] = (rho, p)
            numbers[f"rho_{name}{suffix}_interval"] = zoo.rho_interval(symmetric(t), symmetric(m), n_boot=500)
    numbers.update(mean_gradient_cosine=off_diagonal_mean(res.gradient_cosine),
                   mean_ntk_alignment=off_diagonal_mean(res.ntk_alignment),
                   mean_agreement=off_diagonal_mean(res.agreement))
    rho_g = numbers["rho_gradient"][0]
    rho_k = numbers["rho_ntk"][0]
    lines += [f"Across the {len(pairs_t)} pairs of replicas (L2 PGD at eps* = {res.eps_l2[e]:.3g}), Spearman rank "
              "correlation of the pair's transfer rate (symmetrised) with each pair quantity: rho [95% interval from "
              "a bootstrap over replicas] (Mantel p-value, 2,000 permutations of the replica labels; the pairs are "
              "not independent samples):", "",
              "| pair quantity | mean over pairs | raw rho | pair-specific rho |", "|---|---|---|---|"]
    for name, label in (("gradient", "input-gradient cosine"), ("ntk", "NTK alignment"),
                        ("agreement", "class agreement at radius eps*")):
        raw, spec = numbers[f"rho_{name}"], numbers[f"rho_{name}_pair_specific"]
        mean = numbers[{"gradient": "mean_gradient_cosine", "ntk": "mean_ntk_alignment",
                        "agreement": "mean_agreement"}[name]]
        raw_ci, spec_ci = numbers[f"rho_{name}_interval"], numbers[f"rho_{name}_pair_specific_interval"]
        lines.append(f"| {label} | {mean:.3f} | {raw[0]:+.3f} [{raw_ci[0]:+.3f}, {raw_ci[1]:+.3f}] (p {raw[1]:.2g}) | "
                     f"{spec[0]:+.3f} [{spec_ci[0]:+.3f}, {spec_ci[1]:+.3f}] (p {spec[1]:.2g}) |")
    lines += ["", "(pair-specific: both matrices minus their additive source + target fit, which removes how "
                  "strong a source's attack is and how fragile a target is.)", ""]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    im = axes[0].imshow(res.rates["pgd_l2"][e], vmin=0, vmax=1, cmap="viridis")
    axes[0].set(title=f"L2 PGD transfer at eps* = {res.eps_l2[e]:.3g}", xlabel="target j", ylabel="source i")
    fig.colorbar(im, ax=axes[0])
    axes[1].scatter(pairs_g, pairs_t, s=6)
    axes[1].set(xlabel="input-gradient cosine", ylabel="transfer rate (pair)", title=f"Spearman {rho_g:+.2f}")
    axes[2].scatter(pairs_k, pairs_t, s=6)
    axes[2].set(xlabel="NTK alignment", ylabel="transfer rate (pair)", title=f"Spearman {rho_k:+.2f}")
    figures.append(save(fig, out_dir / f"{stem}_transfer_pairs.png"))
    if snapshots is not None and len(waits):
        from dynsim import adversarial as adv

        rows = []
        for w, theta in zip(waits, snapshots):
            theta = np.asarray(theta, dtype=np.float64)
            if not np.all(np.isfinite(theta)):
                continue
            t, _ = adv.transfer_matrix(model, theta, x, y, [res.eps_l2[e]], norm="l2", steps=10,
                                       step_fraction=_STEP_FRACTION, threshold=threshold)
            rows.append((int(w), off_diagonal_mean(t[0]), float(np.diagonal(t[0]).mean()),
                         off_diagonal_mean(adv.gradient_cosines(model, theta, x))))
        final = (int(config.run.steps), off_diagonal_mean(res.rates["pgd_l2"][e]), float(np.diagonal(res.rates["pgd_l2"][e]).mean()),
                 numbers["mean_gradient_cosine"])
        rows.append(final)
        numbers["over_time"] = rows
        rho_t, p_t = _spearman([r[1] for r in rows], [r[3] for r in rows])
        numbers["rho_time"] = (rho_t, p_t)
        lines += ["Over training (L2 PGD at eps*; parameters at the waiting times and at the end):", "",
                  "| step | transfer (off-diagonal) | white-box | mean gradient cosine |", "|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} |" for r in rows]
        lines += ["", f"Spearman correlation over time of mean transfer with mean gradient cosine: {rho_t:+.3f} "
                      f"(p = {p_t:.2g}, {len(rows)} times).", ""]
    lines += image_links(figures) + [""]
    return lines, numbers
