"""Derivation script: the relu simple network's NTK in LaTeX, and analytic vs simulated response.

    python data/scripts/derive_relu_ntk.py                 # N = 4096, 2000 GD steps (~1 min)
    python data/scripts/derive_relu_ntk.py --quick         # N = 1024, 300 steps (seconds)

1. Prints the empirical NTK Theta(x, x') of f(x) = N^-1/2 sum_j a_j relu(w_j x + b_j) and its
   infinite-width limit at initialisation, as LaTeX (``dynsim.theory.derive``).
2. Trains an ensemble of wide relu networks by full-batch GD on a 1-D teacher task with dynsim,
   recording the one-step training response on a probe grid.
3. Compares, per record, the lazy (linearised) prediction R_t(x; x_s) = -eta (f_t(x_s) - y_s)
   Theta_0(x, x_s) with the simulated response (``dynsim.theory.compare_lazy``), plots both, and
   prints the relative error over all records.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

from dynsim.config import Config, RecordSpec, RunSpec
from dynsim.simple_experiment import Simulation
from dynsim.integrators import TrainerSpec
from dynsim.models.simple import SimpleNet
from dynsim.store import RunReader
from dynsim.tasks import TaskSpec
from dynsim.theory import compare_lazy, derive, init_kernels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small width and few steps (a smoke run)")
    parser.add_argument("--output", default="relu_response.png", help="figure file (default: %(default)s)")
    parser.add_argument("--workdir", default=".", help="where the HDF5 run is written")
    args = parser.parse_args(argv)

    print(derive("ntk", "relu", scaling="ntk").latex())
    print(derive("kernel_init", "relu", scaling="ntk").latex())

    width, steps = (1024, 300) if args.quick else (4096, 2000)
    config = Config(run=RunSpec(seed=11, replicas=4, steps=steps),
                    model=SimpleNet(input_dim=1, width=width, activation="relu", scaling="ntk", bias_std=1.0),
                    task=TaskSpec(kind="teacher", n_train=8, n_test=0, n_probes=48, n_sources=2),
                    training=TrainerSpec(method="gd", eta=0.1),
                    record=RecordSpec(n_records=12, observables=("loss_train", "response", "ntk")))
    path = Path(args.workdir) / f"relu_gd_N{width}.h5"
    result = Simulation(config).run(path, overwrite=True, progress=False)
    if not result.ok:
        print(f"simulation failed: {result.message}", file=sys.stderr)
        return 1
    lazy = compare_lazy(path)                              # each replica's own Theta_0
    limit = compare_lazy(path, kernel="infinite_width")    # the infinite-width kernel
    print(f"# width {width}, {steps} GD steps, eta {config.training.eta}; response error per record:")
    for step, err in zip(lazy.steps, lazy.response_error_per_record):
        print(f"#   step {step:6d}  {err:.2e}")
    print(f"relative error (infinite-width kernel) {limit.response_error:.3e}")
    print(f"relative error (empirical kernel) {lazy.response_error:.3e}")

    with RunReader(path) as reader:
        x_probe, x_source = reader.dataset("probes/x")[:, 0], reader.dataset("sources/x")[:, 0]
    _plot(args.output, x_probe, x_source, lazy, limit, init_kernels(config.model, x_probe[:, None],
                                                                    x_source[:, None]).ntk)
    print(f"# figure: {args.output}")
    return 0


def _plot(output, x_probe, x_source, lazy, limit, ntk_limit):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_r, ax_k, ax_t) = plt.subplots(1, 3, figsize=(14, 4.2))
    replica, source = 0, 0
    records = np.unique(np.linspace(0, len(lazy.steps) - 1, 4).astype(int))
    for i, rec in enumerate(records):
        color = plt.cm.viridis(i / max(1, len(records) - 1))
        ax_r.plot(x_probe, lazy.response_simulated[rec, replica, source], "o", ms=3, color=color,
                  label=f"simulated, step {lazy.steps[rec]}")
        ax_r.plot(x_probe, lazy.response_lazy[rec, replica, source], "-", color=color, lw=1)
    ax_r.axvline(x_source[source], color="grey", ls=":", lw=1)
    ax_r.set(xlabel="probe x", ylabel="R_t(x; x_s)", title="response: simulated (dots), lazy theory (lines)")
    ax_r.legend(fontsize=7)
    # normalised response kernel: simulated at the last record vs the infinite-width relu kernel
    last = len(lazy.steps) - 1
    sim = lazy.response_simulated[last, :, source]
    peak = np.abs(sim).argmax(axis=1)
    # divided by the value at its largest magnitude (sign included: -eta l' flips with the residual)
    ax_k.plot(x_probe, (sim / sim[np.arange(len(sim)), peak][:, None]).T, ".", ms=3, color="C0", alpha=0.6)
    theory = ntk_limit[:, source]
    ax_k.plot(x_probe, theory / theory[np.abs(theory).argmax()], "-", color="k",
              label="infinite-width relu NTK (arc-cosine)")
    ax_k.set(xlabel="probe x", ylabel="normalised response", title="shape: simulated replicas vs theory")
    ax_k.legend(fontsize=7)
    after = lazy.steps > 0   # log axis: step 0 is left out
    t = lazy.steps[after]
    amp_sim = np.sqrt(np.mean(lazy.response_simulated[after] ** 2, axis=(1, 2, 3)))
    amp_lazy = np.sqrt(np.mean(lazy.response_lazy[after] ** 2, axis=(1, 2, 3)))
    amp_inf = np.sqrt(np.mean(limit.response_lazy[after] ** 2, axis=(1, 2, 3)))
    ax_t.loglog(t, amp_sim, "o", label="simulated")
    ax_t.loglog(t, amp_lazy, "-", label="lazy, empirical Theta_0")
    ax_t.loglog(t, amp_inf, "--", label="lazy, infinite-width Theta")
    ax_t.set(xlabel="step", ylabel="RMS response", title="amplitude against training time")
    ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(output, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
