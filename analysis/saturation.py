"""Saturation-driven aging measured in a run and set beside its derived exponents (#12).

A classification run trained with a saturating loss on the logit f (``sigmoid_squared``: squared
error of the sigmoid output; ``cross_entropy``: the sigmoid's log-loss) that records the probe
outputs (``output``) and the NTK (``ntk``) gives, per record, replica and probe, with m = c f the
logit signed by the class c the probe ends in (the sign of f at the last record) and
p = sigmoid(m), q = 1 - p:

* error q (the distance of the output from its target);
* output derivative s'(f) = p q;
* output-space kernel s'(f)^2 Theta(x, x) (the NTK of the sigmoid output on its diagonal);
* loss derivative |dl/df| = q p q (sigmoid_squared) or q (cross_entropy): what the logit's
  one-step response is proportional to.

Each is averaged over probes, fitted by ``analysis.fits.fit_power_law`` (ensemble mean, bootstrap
over replicas) over a late window, and compared with ``dynsim.theory.aging.aging_law(loss,
"sigmoid")``: exponents -1/2, -1/2, -1, -1 (squared error) and -1, -1, -2, -1 (cross-entropy).
"""
import numpy as np

from .figures import save
from .fits import fit_power_law

#: simulator loss -> the loss of the aging law on a sigmoid output
SATURATING_LOSSES = {"sigmoid_squared": "squared", "cross_entropy": "cross_entropy"}
QUANTITIES = ("error", "output_derivative", "output_kernel", "loss_derivative")


def first_output(output: np.ndarray) -> np.ndarray:
    """[record, replica, probe] of the first output from the ``output`` observable ([..., probe,
    output_index]; files written before M outputs existed store [record, replica, probe])."""
    return output[..., 0] if output.ndim == 4 else output


def _sigmoid_pair(m):
    e = np.exp(-np.abs(m))
    big = 1.0 / (1.0 + e)
    small = e / (1.0 + e)
    return np.where(m >= 0, big, small), np.where(m >= 0, small, big)


def saturation_quantities(output: np.ndarray, ntk_diagonal: np.ndarray, loss: str) -> dict:
    """{name: [replica, record]} from the probe outputs and NTK diagonal, both [record, replica, probe]."""
    if loss not in SATURATING_LOSSES:
        raise ValueError(f"loss: got {loss!r}; the saturation analysis needs one of {', '.join(SATURATING_LOSSES)}")
    cls = np.where(output[-1] >= 0, 1.0, -1.0)  # the class each probe ends in
    p, q = _sigmoid_pair(cls[None] * output)
    values = {"error": q, "output_derivative": p * q, "output_kernel": (p * q) ** 2 * ntk_diagonal,
              "loss_derivative": q * p * q if loss == "sigmoid_squared" else q}
    return {name: np.nanmean(v, axis=2).T for name, v in values.items()}


def kernel_time(t: np.ndarray, ntk_diagonal: np.ndarray) -> np.ndarray:
    """T(t) = integral_0^t K(s) ds, K the NTK diagonal averaged over replicas and probes (trapezoid over records).

    For one training sample probed at itself, dz/dt = K(t) g(z) exactly (gradient flow), so in T the
    flow is the constant-kernel one of the theory whatever K does; with several samples the logits
    are coupled through the off-diagonal kernel and T is an approximation.
    """
    from scipy.integrate import cumulative_trapezoid

    k = np.nanmean(ntk_diagonal, axis=(1, 2))
    return cumulative_trapezoid(k, t, initial=0.0)


def flow_exponent(loss: str, name: str, window: tuple[float, float]) -> float:
    """Log-log slope of quantity ``name`` of the exact constant-kernel flow (K = 1, C = 0) between the
    ends of ``window`` (in T): the derived exponent with every correction the window still carries."""
    from scipy.optimize import brentq

    from dynsim.theory.aging import aging_law, numeric_functions

    _, F, exact, _, _ = numeric_functions(aging_law(SATURATING_LOSSES[loss], "sigmoid"))
    values = []
    for T in window:
        u = brentq(lambda v: F(v) - T, 1e-6, 1e12, xtol=1e-14, rtol=1e-14, maxiter=500)
        values.append(float(exact[name](u, 1.0)))
    return float(np.log(values[1] / values[0]) / np.log(window[1] / window[0]))


def saturation_fits(reader, window=None) -> tuple[dict, tuple]:
    """Fits of a run of a saturating loss over a late window (default: the last two decades of t).

    Returns ({name: dict(t=PowerLawFit in t, kernel=PowerLawFit in kernel time or None, derived=
    exponent, flow=exact-flow exponent over the kernel-time window)}, (t, T, values)); ``values``
    also holds "kernel", the mean NTK diagonal [replica, record].
    """
    from dynsim.theory.aging import aging_law

    loss = reader.training_attrs["loss"]
    missing = [n for n in ("output", "ntk") if n not in reader.observable_names]
    if loss not in SATURATING_LOSSES or missing:
        raise ValueError(f"{reader.path}: the saturation analysis needs training.loss in "
                         f"{', '.join(SATURATING_LOSSES)} and the observables 'output' and 'ntk' "
                         f"(missing: {', '.join(missing) or 'none'}; loss {loss!r})")
    t = reader.times
    diagonal = np.diagonal(reader.observable("ntk"), axis1=2, axis2=3)
    values = saturation_quantities(first_output(reader.observable("output")), diagonal, loss)
    values["kernel"] = np.nanmean(diagonal, axis=2).T  # [replica, record]: K's own drift, for the report
    T = kernel_time(t, diagonal)
    keep = t > 0
    window = window if window is not None else (float(t[-1]) / 100.0, float(t[-1]))
    inside = (t >= window[0]) & (t <= window[1])
    t_window = (float(T[inside][0]), float(T[inside][-1]))
    law = aging_law(SATURATING_LOSSES[loss], "sigmoid")
    fits = {}
    for name in QUANTITIES:
        in_t = fit_power_law(t[keep], values[name][:, keep], window=window)
        # the output kernel carries K itself: its exponent in kernel time is not the theory's
        in_kernel = (fit_power_law(T[keep], values[name][:, keep], window=t_window) if name != "output_kernel"
                     else None)
        flow = flow_exponent(loss, name, t_window) if name != "output_kernel" else None
        fits[name] = dict(t=in_t, kernel=in_kernel, derived=float(law.exponents[name]), flow=flow)
    return fits, (t, T, values)


def saturation_section(reader, stem, out_dir, plt, window=None) -> tuple[list[str], dict, list[str]]:
    """Report lines, numbers and figures of the saturation analysis of one run."""
    fits, (t, T, values) = saturation_fits(reader, window)
    loss = reader.training_attrs["loss"]
    lines = [f"- saturation-driven aging ({loss} on the sigmoid output; derived: dynsim derive --quantity aging). "
             "Exponents in t, and in kernel time T = integral K dt (K the mean NTK diagonal), beside the "
             "derived leading exponent and the exact constant-kernel flow's slope over the same T window:",
             "", "| quantity | in t [95 % CI] | in T [95 % CI] | derived (leading) | exact flow over the window |",
             "|---|---|---|---|---|"]
    numbers = {}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    keep = t > 0
    for i, name in enumerate(QUANTITIES):
        f = fits[name]
        lo, hi = f["t"].exponent_ci
        cell_t = f"{f['t'].exponent:.3f} [{lo:.3f}, {hi:.3f}]"
        if f["kernel"] is not None:
            klo, khi = f["kernel"].exponent_ci
            cell_k = f"{f['kernel'].exponent:.3f} [{klo:.3f}, {khi:.3f}]"
            cell_f = f"{f['flow']:.4f}"
            numbers[f"saturation_{name}_kernel_time"] = (f["kernel"].exponent, klo, khi, f["flow"])
        else:
            cell_k = cell_f = "(carries K)"
        numbers[f"saturation_{name}"] = (f["t"].exponent, lo, hi, f["derived"])
        lines.append(f"| {name} | {cell_t} | {cell_k} | {f['derived']:g} | {cell_f} |")
        mean = np.nanmean(values[name][:, keep], axis=0)
        ax.plot(t[keep], mean, color=f"C{i}", label=f"{name}: {f['t'].exponent:.3f} (derived {f['derived']:g})")
        tt = np.geomspace(*f["t"].window, 20)
        ax.plot(tt, f["t"].amplitude * tt ** f["t"].exponent, "k--", lw=0.8)
    drift = fit_power_law(t[keep], values["kernel"][:, keep], window=fits["error"]["t"].window)
    numbers["kernel_drift_exponent"] = drift.exponent
    lines.append(f"| NTK diagonal K (mean) | {drift.exponent:.3f} | | 0 (constant kernel) | |")
    ax.set(xscale="log", yscale="log", xlabel="t", title="saturating output: fitted (dashed) vs derived")
    ax.legend(fontsize=7)
    figure = save(fig, out_dir / f"{stem}_saturation.png")
    lines.append("")
    return lines, numbers, [figure]
