"""Rebuild every block of docs/results.md from run files: the one command behind the page (issue 22).

    python data/scripts/results.py [--runs runs] [--results docs/results.md] [--only NAME ...]

Runs each results script below in turn, in a process of its own, with the same ``--runs`` and
``--results``. Each script runs what is missing of its configs into ``runs/`` (a complete file is kept, an
interrupted one resumed, a file of another config refused) and rewrites its blocks of the page; see its
docstring for what it measures and how its intervals are made. ``--only`` runs the named scripts.
The full set takes hours on a 2-core machine the first time (the deep sweeps and the transfer zoo
dominate) and minutes once the run files exist.
"""
import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# script -> the blocks of docs/results.md it writes, in the order of the page
SCRIPTS = {
    "simple_network_results": ("lazy", "aging_windows", "aging_detail", "activation", "features"),
    "sde_orders": ("sde", "sde_network"),
    "chain_results": ("chain",),
    "transfer_replicas": ("transfer_replicas",),
    "transfer_zoo": ("transfer_zoo",),
    "saturation_results": ("saturation", "plasticity", "encoding_m4"),
    "deep_sweeps": ("depth_sweep", "width_sweep"),
    "depth_trainability": ("depth_trainability",),
    "depth_width_predictors": ("depth_width",),
    "grokking_mechanism": ("grokking_one_layer", "grokking"),
    "double_descent": ("double_descent",),
    "response_law_prediction": ("response_law",),
    "flat_minima": ("flat_minima",),
}
# the scripts that recompute everything themselves and read no run files
NO_RUNS = ("sde_orders",)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs"))
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"))
    parser.add_argument("--only", nargs="+", choices=sorted(SCRIPTS), metavar="NAME",
                        help=f"run only these scripts ({', '.join(SCRIPTS)})")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or SCRIPTS:
        command = [sys.executable, str(ROOT / "data" / "scripts" / f"{name}.py"), "--results", args.results]
        if name not in NO_RUNS:
            command += ["--runs", args.runs]
        print(f"results: {name} ({', '.join(SCRIPTS[name])})", file=sys.stderr)
        if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
            failed.append(name)
    if failed:
        print(f"results: failed: {', '.join(failed)} (their blocks keep their earlier text)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
