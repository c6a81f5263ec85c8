"""Plasticity and the freezing of region boundaries (#12; ../shared/papers/nakazato.md).

* **Late-sample response**: at each waiting time t_w (parameters kept by the two-time grid), the
  exact one-step response of the network at a sample it never trained on (the run's test inputs,
  with their labels): R(x_n) = f(x_n; theta - eta l'(f(x_n), y_n) grad f(x_n)) - f(x_n; theta). Its
  mean amplitude against the introduction time t_w measures how much a late sample can still move
  the network; for a saturating loss it ages like |dl/df| (derived exponent -1 for both
  sigmoid_squared and cross_entropy, with the kernel's drift on top).
* **Boundaries** (D = 1 inputs, probes on a grid, ``output`` recorded): the zero crossing of f
  along the probe grid (linear interpolation), per record and replica, and its speed between
  records; a region boundary that stops moving is one whose speed decays (fitted as a power law).

Everything is computed from the file (``dynsim.store``) with the public compiled kernels of
``dynsim.adversarial`` (outputs, parameter gradients) and ``dynsim.losses``.
"""
import numpy as np

from dynsim.kinds import stored_config

from .figures import save
from .fits import fit_power_law
from .saturation import first_output


def boundary_positions(x_grid: np.ndarray, f: np.ndarray) -> np.ndarray:
    """[record, replica]: where f changes sign along the sorted 1-D grid (linear interpolation);
    NaN where f has no sign change or more than one (no single boundary to follow)."""
    x_grid = np.asarray(x_grid, dtype=np.float64).ravel()
    order = np.argsort(x_grid)
    x, f = x_grid[order], np.asarray(f)[..., order]
    s = f >= 0
    change = s[..., 1:] != s[..., :-1]
    count = change.sum(axis=-1)
    k = np.argmax(change, axis=-1)
    f0 = np.take_along_axis(f, k[..., None], axis=-1)[..., 0]
    f1 = np.take_along_axis(f, (k + 1)[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = x[k] + (x[k + 1] - x[k]) * f0 / (f0 - f1)
    return np.where(count == 1, pos, np.nan)


def boundary_speed(t: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(midpoint times [record-1], |dx_b/dt| [replica, record-1]) between consecutive records."""
    dt = np.diff(t)
    speed = np.abs(np.diff(positions, axis=0)) / dt[:, None]
    return np.sqrt(t[1:] * t[:-1]), speed.T


def late_sample_response(model, params: np.ndarray, x_new: np.ndarray, y_new: np.ndarray, eta: float,
                         loss: str) -> tuple[np.ndarray, np.ndarray]:
    """(f [replica, sample], first-order |R(x_n)| = eta |l'(f(x_n), y_n)| |grad f(x_n)|^2 [replica, sample]).

    First order because the exact difference f(theta + Delta theta) - f(theta) is lost to rounding
    once it falls below ~1e-16 |f|, which saturated samples reach (tested against the exact one
    while it is resolved).
    """
    from dynsim import adversarial as adv
    from dynsim.losses import LOSSES, loss_derivative

    code = LOSSES[loss]
    f = adv.outputs(model, params, x_new)
    jac = adv.parameter_jacobians(model, params, x_new)
    dl = np.array([[loss_derivative(float(v), float(y), code) for v, y in zip(row, y_new)] for row in f])
    return f, eta * np.abs(dl) * np.einsum("rkp,rkp->rk", jac, jac)


def exact_late_response(model, params, x_new, y_new, eta, loss) -> np.ndarray:
    """[replica, sample]: the exact one-step |R(x_n)| (for checking the first-order one)."""
    from dynsim import adversarial as adv
    from dynsim.losses import LOSSES, loss_derivative

    f = adv.outputs(model, params, x_new)
    jac = adv.parameter_jacobians(model, params, x_new)
    out = np.empty_like(f)
    for k in range(x_new.shape[0]):
        dl = np.array([loss_derivative(float(v), float(y_new[k]), LOSSES[loss]) for v in f[:, k]])
        out[:, k] = np.abs(adv.outputs(model, params - eta * dl[:, None] * jac[:, k, :], x_new[k:k + 1])[:, 0] - f[:, k])
    return out


def late_response_quarters(reader) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(t_w [wait], first-order |R| [wait, replica, sample], final f [replica, sample], quarter [sample]) of a
    run that kept theta(t_w): the late-sample response of ``plasticity_section`` on the run's test inputs,
    the samples in quarters (0..3) of their final |f| averaged over replicas, as that section groups them."""
    config = stored_config(reader)
    data = reader.data()
    waits = reader.two_time_axes()["t_w_time"]
    eta = float(reader.training_attrs["eta"])
    results = [late_sample_response(config.model, np.asarray(th, dtype=np.float64), data.x_test, data.y_test, eta,
                                    config.training.loss) for th in reader.dataset("two_time/theta_w")]
    amp = np.array([r[1] for r in results])
    saturation = np.abs(results[-1][0]).mean(axis=0)
    quarter = np.minimum(3, (4 * np.argsort(np.argsort(saturation))) // len(saturation))
    return waits, amp, results[-1][0], quarter


def late_slope(waits: np.ndarray, amplitude: np.ndarray, last: int = 4) -> float:
    """Log-log slope of ``amplitude`` [wait] over the last ``last`` waiting times (those above 0), as
    ``plasticity_section`` fits it; NaN with fewer than two."""
    late = amplitude[-last:] if len(amplitude) >= last else amplitude
    ok = late > 0
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(waits[-len(late):][ok]), np.log(late[ok]), 1)[0])


def plasticity_section(reader, stem, out_dir, plt) -> tuple[list[str], dict, list[str]]:
    """Report lines, numbers and figures: boundary motion (D = 1) and the late-sample response."""
    config = stored_config(reader)
    names = set(reader.observable_names)
    lines, numbers, figures = [], {}, []
    t = reader.times
    if "output" in names and config.model.input_dim == 1 and config.model.outputs == 1:
        x_probe = reader.data().x_probe[:, 0]
        pos = boundary_positions(x_probe, first_output(reader.observable("output")))  # one output: its sign
        keep = t > 0
        mid, speed = boundary_speed(t[keep], pos[keep])
        final = pos[-1]
        numbers["boundary_final"] = final
        good = np.isfinite(final)
        lines.append(f"- region boundary (zero crossing of f on the probe grid): at the end at "
                     f"{np.nanmean(final):.4f} +- {np.nanstd(final):.4f} (mean +- s.d., {good.sum()}/{final.size} "
                     f"replicas with one crossing); task edge {config.task.boundary:g}")
        usable = np.all(speed > 0, axis=0) & np.all(np.isfinite(speed), axis=0)
        if usable.sum() >= 3:
            window = (float(mid[-1]) / 100.0, float(mid[-1]))
            fit = fit_power_law(mid[usable], speed[:, usable], window=window)
            numbers["boundary_speed_exponent"] = (fit.exponent, *fit.exponent_ci)
            lines.append(f"- boundary speed |dx_b/dt| ~ t^{fit.exponent:.3f} [{fit.exponent_ci[0]:.3f}, "
                         f"{fit.exponent_ci[1]:.3f}] over t in [{fit.window[0]:.3g}, {fit.window[1]:.3g}]: the "
                         "boundary stops moving")
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.6))
        for r in range(min(8, pos.shape[1])):
            ax0.plot(t[keep], pos[keep, r], lw=0.8)
        ax0.axhline(config.task.boundary, color="k", ls=":", label="task edge")
        ax0.set(xscale="log", xlabel="t", ylabel="boundary x_b", title="region boundary (8 replicas)")
        ax0.legend(fontsize=7)
        ax1.plot(mid, np.nanmedian(speed, axis=0), label="median over replicas")
        ax1.set(xscale="log", yscale="log", xlabel="t", ylabel="|dx_b/dt|", title="boundary speed")
        figures.append(save(fig, out_dir / f"{stem}_boundary.png"))
    if "response" in names and config.model.input_dim == 1:
        figures.append(_response_kernel_figure(reader, stem, out_dir, plt))
    if reader.has_two_time and len(reader.data().x_test) >= 4:
        data = reader.data()
        waits = reader.two_time_axes()["t_w_time"]
        snapshots = reader.dataset("two_time/theta_w")
        eta = float(reader.training_attrs["eta"])
        results = [late_sample_response(config.model, np.asarray(th, dtype=np.float64), data.x_test, data.y_test,
                                        eta, config.training.loss) for th in snapshots]
        amp = np.array([r[1] for r in results])  # [wait, replica, sample]
        # samples in quarters of their final saturation |f| (D = 1 encoding: distance from the boundary)
        saturation = np.abs(results[-1][0]).mean(axis=0)
        quarter = np.minimum(3, (4 * np.argsort(np.argsort(saturation))) // len(saturation))
        numbers["late_response"] = (waits, amp, quarter)
        lines.append(f"- plasticity: first-order response eta |l'| |grad f|^2 of a one-step update on a test sample "
                     f"(never trained on) at its introduction time t_w, by quarter of the samples' final |f| "
                     f"(mean over replicas and samples; t_w = {waits[0]:.3g} -> {waits[-1]:.3g}):")
        lines.append("")
        lines.append("| quarter of final abs f | mean abs f at the end | amplitude at first t_w | at last t_w | "
                     "late slope (last 4 t_w) |")
        lines.append("|---|---|---|---|---|")
        fig, ax = plt.subplots(figsize=(5, 3.6))
        slopes = []
        for qt in range(4):
            a = amp[:, :, quarter == qt].mean(axis=(1, 2))
            late = a[-4:] if len(a) >= 4 else a
            ok = late > 0
            slope = (float(np.polyfit(np.log(waits[-len(late):][ok]), np.log(late[ok]), 1)[0]) if ok.sum() >= 2
                     else float("nan"))
            slopes.append(slope)
            lines.append(f"| {qt + 1} | {saturation[quarter == qt].mean():.3g} | {a[0]:.3g} | {a[-1]:.3g} | "
                         f"{slope:.2f} |")
            ax.plot(waits, a, "o-", ms=3, label=f"quarter {qt + 1} (|f| ~ {saturation[quarter == qt].mean():.2g})")
        numbers["late_response_slopes"] = slopes
        lines.append("")
        ax.set(xscale="log", yscale="log", xlabel="introduction time t_w", ylabel="first-order |R(x_new)|",
               title="response to a late sample")
        ax.legend(fontsize=7)
        figures.append(save(fig, out_dir / f"{stem}_plasticity.png"))
    if lines:
        lines.append("")
    return lines, numbers, figures


def _response_kernel_figure(reader, stem, out_dir, plt):
    """The response over input space to a step on source 0, at five record times, each normalised by
    its largest magnitude over the probes (ensemble median): how the kernel's shape changes as the
    regions saturate."""
    t = reader.times
    response = reader.observable("response")  # [record, replica, source, probe]
    x = reader.data().x_probe[:, 0]
    xs = reader.data().x_source[0, 0]
    order = np.argsort(x)
    targets = np.geomspace(t[1], t[-1], 6)  # evenly in log t; a curve that rounds to 0 (saturated) is left out
    picks = np.unique([int(np.argmin(np.abs(np.log(t[1:]) - np.log(v)))) + 1 for v in targets])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for i, k in enumerate(picks):
        curve = np.median(response[k, :, 0, :], axis=0)[order]
        peak = np.max(np.abs(curve))
        if peak > 0:
            ax.plot(x[order], curve / peak, color=plt.cm.viridis(i / max(1, len(picks) - 1)), label=f"t = {t[k]:.3g}")
    ax.axvline(xs, color="k", ls=":", lw=0.8, label="source x_s")
    ax.set(xlabel="probe x", ylabel="R_t(x; x_s) / max |R_t|", title="response kernel over input space")
    ax.legend(fontsize=7)
    return save(fig, out_dir / f"{stem}_response_kernel.png")
