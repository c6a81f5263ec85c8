"""The response-law model against the network it describes: does the law explain the learning?

A law file (``[model] kind = "response_law"``) and a simple-network run file on the same data, with the
same seed and record steps: replica r of the law starts from replica r's initial function and, for
SGD, takes its batches. Per replica and record (records matched by step; replicas paired by index, so
replicas are the independent samples every interval below is taken over):

* function error: |f_law - f_net| / |f_net| on the probes (all outputs), and the error of the
  learned change, |Delta f_law - Delta f_net| / |Delta f_net| with Delta f = f(t) - f(0);
* region agreement: the fraction of probes where both give the same class (sign of f against the
  task's threshold for one output, argmax for M outputs);
* D = 1: the boundaries (zero crossings of f for one output, argmax changes for M) at the end, and
  when each region is carved: the first record at which >= 90 % of the probes inside the task's
  region are claimed by its class; the boundary speed's power-law exponent where both have one;
* the response amplitude (RMS of the recorded response) at the end, law over network;
* plasticity, where the law records ``late_response`` and the network its parameters: the
  first-order response of one step on each never-trained test sample at itself,
  eta |sum_n Theta_mn(x, x) l'_n(f(x), y)|, the network's recomputed from its recorded parameters
  (``dynsim.trajectory.measure_run`` on the test inputs); its mean over test samples, law over
  network at the end, and each one's power-law decay exponent over the last two decades.

Every interval is a 95 % percentile bootstrap over replicas (2,000 resamples, seeded).
"""
import dataclasses
import warnings
from pathlib import Path

import numpy as np

from dynsim.kinds import stored_config
from dynsim.store import RunReader

from .figures import band_plot, save
from .fits import fit_power_law
from .plasticity import boundary_positions, boundary_speed
from .regions import region_boundaries

CARVED = 0.9   # fraction of a region's probes its class must claim for the region to count as carved
N_BOOT = 2000


def replica_interval(values, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """(mean, low, high): the mean over replicas of ``values`` [replica] and its 95 % percentile
    bootstrap interval over replicas; non-finite replicas are left out (NaN when none is finite)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    return (float(v.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


@dataclasses.dataclass(frozen=True)
class LawComparison:
    law_path: str
    network_path: str
    times: np.ndarray            # [record] of the matched records
    x_probe: np.ndarray          # [probe, D]
    f_law: np.ndarray            # [record, replica, probe, M]
    f_network: np.ndarray
    function_error: np.ndarray   # [record, replica]
    change_error: np.ndarray     # [record, replica] (NaN at t = 0)
    agreement: np.ndarray        # [record, replica]
    boundaries_law: np.ndarray | None      # [record, replica, boundary] (D = 1)
    boundaries_network: np.ndarray | None
    carve_law: np.ndarray | None           # [replica, region]: time each region is carved (inf: never)
    carve_network: np.ndarray | None
    response_ratio: np.ndarray | None      # [replica] at the end
    late_law: np.ndarray | None = None     # [record, replica]: mean first-order late-sample response
    late_network: np.ndarray | None = None

    def summary(self) -> dict:
        """The comparison's numbers, each (mean, low, high) over replicas."""
        out = dict(function_error_final=replica_interval(self.function_error[-1]),
                   change_error_final=replica_interval(self.change_error[-1]),
                   agreement_final=replica_interval(self.agreement[-1]))
        k = _median_record(self.times)
        out["function_error_mid"] = replica_interval(self.function_error[k])
        out["change_error_mid"] = replica_interval(self.change_error[k])
        out["t_mid"] = float(self.times[k])
        if self.boundaries_law is not None:
            with warnings.catch_warnings():  # a replica without every boundary: NaN, left out of the interval
                warnings.simplefilter("ignore", RuntimeWarning)
                gap = np.nanmean(np.abs(self.boundaries_law[-1] - self.boundaries_network[-1]), axis=-1)
            out["boundary_gap_final"] = replica_interval(gap)
        if self.carve_law is not None:
            out["carve_log_ratio"] = [replica_interval(np.log10(self.carve_law[:, m] / self.carve_network[:, m]))
                                      for m in range(self.carve_law.shape[1])]
            out["carved_fraction"] = (float(np.mean(np.isfinite(self.carve_law))),
                                      float(np.mean(np.isfinite(self.carve_network))))
        if self.response_ratio is not None:
            out["response_ratio_final"] = replica_interval(self.response_ratio)
        if self.late_law is not None:
            out["late_ratio_final"] = replica_interval(self.late_law[-1] / self.late_network[-1])
            out["late_exponents"] = tuple(_decay_exponent(self.times, v) for v in (self.late_law, self.late_network))
        return out


def _decay_exponent(times, values):
    """Power-law exponent (with its interval over replicas) of ``values`` [record, replica] over the last
    two decades of t, or None where fewer than 3 records are positive there."""
    keep = (times > 0) & np.all(np.isfinite(values) & (values > 0), axis=1)
    if keep.sum() < 3:
        return None
    fit = fit_power_law(times[keep], values[keep].T, window=(float(times[-1]) / 100.0, float(times[-1])))
    return (fit.exponent, *fit.exponent_ci)


def network_late_response(network_path, x_test, y_test, replicas: int) -> np.ndarray | None:
    """[record, replica]: the network's mean first-order late-sample response over the test samples,
    recomputed from its recorded parameters; None when it records none."""
    import tempfile

    from dynsim.theory.network import loss_derivative
    from dynsim.trajectory import measure_run

    with RunReader(network_path) as rd:
        if rd.trajectory_replicas < replicas:
            return None
        outputs = int(rd.model_attrs.get("outputs", 1))
        eta, loss = float(rd.training_attrs["eta"]), rd.training_attrs["loss"]
    kernel = "ntk" if outputs == 1 else "ntk_outputs"
    with tempfile.TemporaryDirectory(prefix="dynsim-law-") as folder:
        path = measure_run(network_path, Path(folder) / "test.h5", observables=[kernel, "output"], probes=x_test)
        with RunReader(path) as rd:
            ntk, f = rd.observable(kernel)[:, :replicas], rd.observable("output")[:, :replicas]
    y = np.asarray(y_test, dtype=float).reshape(len(x_test), outputs)
    grad = loss_derivative(loss, f, np.broadcast_to(y, f.shape))          # [record, replica, test, M]
    if outputs == 1:
        diagonal = np.einsum("trkk->trk", ntk)[..., None, None]             # [record, replica, test, 1, 1]
    else:
        diagonal = np.einsum("trkkmn->trkmn", ntk)
    response = eta * np.linalg.norm(np.einsum("trkmn,trkn->trkm", diagonal, grad), axis=-1)
    return response.mean(axis=2)


def _median_record(times) -> int:
    """The record at the geometric middle of the positive times (a mid-training comparison)."""
    positive = np.flatnonzero(times > 0)
    target = np.sqrt(times[positive[0]] * times[positive[-1]])
    return int(positive[np.argmin(np.abs(np.log(times[positive] / target)))])


def _classes(f, threshold):
    """[..., probe]: the class of each probe (one output: f >= threshold; M outputs: argmax)."""
    return (f[..., 0] >= threshold).astype(int) if f.shape[-1] == 1 else np.argmax(f, axis=-1)


def _carving_times(times, classes, target):
    """[replica, region]: the first time >= CARVED of the probes of each region carry its class."""
    regions = np.unique(target)
    out = np.full((classes.shape[1], len(regions)), np.inf)
    for j, m in enumerate(regions):
        inside = target == m
        claimed = np.mean(classes[:, :, inside] == m, axis=2) >= CARVED  # [record, replica]
        for r in range(classes.shape[1]):
            hit = np.flatnonzero(claimed[:, r] & (times > 0))
            if hit.size:
                out[r, j] = times[hit[0]]
    return out


def resolve_reference(law_path, reference) -> Path | None:
    """The reference file as stored (relative to the working directory) or next to the law file."""
    if not reference:
        return None
    for candidate in (Path(reference), Path(law_path).parent / Path(reference).name):
        if candidate.exists():
            return candidate
    return None


def compare_files(law_path, network_path) -> LawComparison:
    """The comparison of the module docstring; ValueError when the files cannot be paired."""
    with RunReader(law_path) as law, RunReader(network_path) as net:
        for reader in (law, net):
            if "output" not in reader.observable_names:
                raise ValueError(f"{reader.path} records no 'output' on the probes to compare")
        if not np.array_equal(law.data().x_probe, net.data().x_probe) or \
                not np.array_equal(law.data().x_train, net.data().x_train):
            raise ValueError(f"{law_path} and {network_path} have other training inputs or probes: not a pair")
        common, li, ni = np.intersect1d(law.steps, net.steps, return_indices=True)
        if common.size < 2:
            raise ValueError(f"{law_path} and {network_path} share fewer than 2 record steps")
        replicas = min(law.attrs["n_replicas"], net.attrs["n_replicas"])
        f_law, f_net = law.observable("output")[li, :replicas], net.observable("output")[ni, :replicas]
        times, x_probe = net.times[ni], net.data().x_probe
        config = stored_config(net)
        threshold = 0.5 if config.task.labels == "01" else 0.0
        late_law = late_net = None
        if "late_response" in law.observable_names and law.data().x_test.shape[0]:
            late_law = law.observable("late_response")[li, :replicas].mean(axis=2)
            x_test, y_test = law.data().x_test, law.data().y_test
        ratio = None
        if "response" in law.observable_names and "response" in net.observable_names:
            rms = lambda rd: np.sqrt(np.mean(rd.observable("response", records=slice(-1, None))[0, :replicas] ** 2,  # noqa: E731
                                             axis=(1, 2)))
            if law.steps[-1] == net.steps[-1]:
                ratio = rms(law) / rms(net)
    if late_law is not None:
        late_net = network_late_response(network_path, x_test, y_test, replicas)
        late_net = None if late_net is None else late_net[ni]
        late_law = None if late_net is None else late_law
    flat = lambda a: a.reshape(a.shape[0], a.shape[1], -1)  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.linalg.norm(flat(f_law - f_net), axis=2) / np.linalg.norm(flat(f_net), axis=2)
        moved = np.linalg.norm(flat(f_net - f_net[:1]), axis=2)
        change = np.linalg.norm(flat((f_law - f_law[:1]) - (f_net - f_net[:1])), axis=2) / moved
    change[moved == 0] = np.nan
    cl, cn = _classes(f_law, threshold), _classes(f_net, threshold)
    agreement = np.mean(cl == cn, axis=2)
    b_law = b_net = carve_law = carve_net = None
    if x_probe.shape[1] == 1 and config.task.kind == "encoding":
        x = x_probe[:, 0]
        m = f_law.shape[-1]
        if m == 1:
            b_law, b_net = boundary_positions(x, f_law[..., 0] - threshold)[..., None], \
                boundary_positions(x, f_net[..., 0] - threshold)[..., None]
            target = (x >= config.task.boundary).astype(int)
        else:
            b_law, b_net = region_boundaries(x, f_law), region_boundaries(x, f_net)
            target = np.minimum(m - 1, np.floor(x * m).astype(int))
        carve_law, carve_net = _carving_times(times, cl, target), _carving_times(times, cn, target)
    return LawComparison(str(law_path), str(network_path), times, x_probe, f_law, f_net, error, change, agreement,
                         b_law, b_net, carve_law, carve_net, ratio, late_law, late_net)


def boundary_exponent(times, boundaries):
    """The power-law exponent of the mean boundary speed with its interval, or None (fewer than 3
    usable points, or no single set of boundaries to follow)."""
    keep = times > 0
    with warnings.catch_warnings():  # a record without every boundary gives NaN, left out below
        warnings.simplefilter("ignore", RuntimeWarning)
        mid, speed = boundary_speed(times[keep], np.nanmean(boundaries[keep], axis=-1))
    usable = np.all(speed > 0, axis=0) & np.all(np.isfinite(speed), axis=0)
    if usable.sum() < 3:
        return None
    fit = fit_power_law(mid[usable], speed[:, usable], window=(float(mid[-1]) / 100.0, float(mid[-1])))
    return (fit.exponent, *fit.exponent_ci)


def _fmt(interval) -> str:
    mean, low, high = interval
    return f"{mean:.3g} [{low:.3g}, {high:.3g}]"


def law_lines(comparison: LawComparison, label: str = "") -> tuple[list[str], dict]:
    """Report lines and numbers of one comparison."""
    s = comparison.summary()
    n = comparison.f_law.shape[1]
    lines = [f"- law vs network{(' (' + label + ')') if label else ''}: `{comparison.law_path}` against "
             f"`{comparison.network_path}`, {n} paired replicas; mean [95% bootstrap interval over replicas]",
             f"  - function error |f_law - f_net| / |f_net| on the probes: {_fmt(s['function_error_mid'])} at "
             f"t = {s['t_mid']:.3g}, {_fmt(s['function_error_final'])} at the end (t = {comparison.times[-1]:.3g})",
             f"  - error of the learned change |Delta f_law - Delta f_net| / |Delta f_net|: "
             f"{_fmt(s['change_error_mid'])} at t = {s['t_mid']:.3g}, {_fmt(s['change_error_final'])} at the end",
             f"  - probes classified alike at the end: {_fmt(s['agreement_final'])}"]
    if "boundary_gap_final" in s:
        lines.append(f"  - boundary positions at the end, mean |x_b(law) - x_b(net)|: {_fmt(s['boundary_gap_final'])}")
        exps = [boundary_exponent(comparison.times, b) for b in (comparison.boundaries_law,
                                                                 comparison.boundaries_network)]
        if all(e is not None for e in exps):
            s["boundary_speed_exponents"] = exps
            lines.append(f"  - boundary speed exponent (|dx_b/dt| ~ t^e over the last two decades): law "
                         f"{exps[0][0]:.3f} [{exps[0][1]:.3f}, {exps[0][2]:.3f}], network {exps[1][0]:.3f} "
                         f"[{exps[1][1]:.3f}, {exps[1][2]:.3f}]")
    if "carve_log_ratio" in s:
        ratios = ", ".join(_fmt(r) for r in s["carve_log_ratio"])
        lines.append(f"  - time each region is carved (>= {CARVED:.0%} of its probes): log10(t_law / t_net) per "
                     f"region {ratios}; carved by the end: law {s['carved_fraction'][0]:.0%}, network "
                     f"{s['carved_fraction'][1]:.0%} of replica-regions")
    if "response_ratio_final" in s:
        lines.append(f"  - response amplitude at the end, law / network: {_fmt(s['response_ratio_final'])}")
    if "late_ratio_final" in s:
        exps = s["late_exponents"]
        text = (f"  - plasticity (first-order response of a step on a never-trained test sample, mean over them): "
                f"law / network at the end {_fmt(s['late_ratio_final'])}")
        if all(e is not None for e in exps):
            text += (f"; decay exponent over the last two decades: law {exps[0][0]:.3f} [{exps[0][1]:.3f}, "
                     f"{exps[0][2]:.3f}], network {exps[1][0]:.3f} [{exps[1][1]:.3f}, {exps[1][2]:.3f}]")
        lines.append(text)
    return lines, s


def law_figures(comparison: LawComparison, stem: str, out_dir, plt) -> list[str]:
    """Network and law side by side: the probe function at four times (replica 0), and the errors over t."""
    out_dir = Path(out_dir)
    figures = []
    times, x = comparison.times, comparison.x_probe
    if x.shape[1] == 1:
        order = np.argsort(x[:, 0])
        picks = np.unique(np.geomspace(1, len(times) - 1, 4).astype(int))
        fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.2), sharey=True)
        for ax, k in zip(np.atleast_1d(axes), picks):
            for m in range(comparison.f_law.shape[-1]):
                line, = ax.plot(x[order, 0], comparison.f_network[k, 0, order, m], lw=1.2)
                ax.plot(x[order, 0], comparison.f_law[k, 0, order, m], ls="--", color=line.get_color(), lw=1.2)
            ax.set(xlabel="x", title=f"t = {times[k]:.3g}")
        np.atleast_1d(axes)[0].set_ylabel("f (solid: network, dashed: law)")
        figures.append(save(fig, out_dir / f"{stem}_law_function.png"))
    fig, ax = plt.subplots(figsize=(5, 3.6))
    keep = times > 0  # at t = 0 both start from one function: no error to draw on a log axis
    band_plot(ax, times[keep], comparison.function_error[keep], "|f_law - f_net| / |f_net|")
    band_plot(ax, times[keep], comparison.change_error[keep], "|Df_law - Df_net| / |Df_net|")
    ax.set(xscale="log", yscale="log", xlabel="t", ylabel="relative error (median, 10-90%)",
           title=f"{stem}: law against network")
    ax.legend(fontsize=7)
    figures.append(save(fig, out_dir / f"{stem}_law_error.png"))
    return figures


def law_vs_network_section(source, plt):
    """Report section of a law file whose ``reference_file`` can be found: the comparison above."""
    rd = source.reader
    reference = resolve_reference(source.path, rd.model_attrs.get("reference_file"))
    if reference is None:
        named = rd.model_attrs.get("reference_file")
        return ([f"- law vs network: {'the reference file ' + repr(named) + ' is not found' if named else 'no [model] reference_file to compare with'}"],
                {}, [])
    comparison = compare_files(source.path, reference)
    lines, numbers = law_lines(comparison)
    return lines + [""], {"law_vs_network": numbers}, law_figures(comparison, source.stem, source.out_dir, plt)
