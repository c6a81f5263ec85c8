"""``analysis report RUN.h5 [RUN.h5 ...] -o DIR`` (also ``python -m analysis report ...``).

Exit codes: 0 done, 2 bad input (a missing, truncated or foreign file, named in one line).
"""
import argparse
import math
import os
import sys
from pathlib import Path

from dynsim.store import StoreError


def _window_problem(window) -> str | None:
    if window is None:
        return None
    t0, t1 = window
    if not (math.isfinite(t0) and math.isfinite(t1)) or t0 < 0 or t0 >= t1:
        return (f"--window {t0:g} {t1:g}: the fit window is T0 T1 in time t with 0 <= T0 < T1, both finite "
                "(e.g. --window 10 1000)")
    return None


def _output_problem(out: Path) -> str | None:
    """A clear line for an output directory that cannot be used, before any figure is drawn."""
    if out.exists() and not out.is_dir():
        return f"-o {out}: a file of that name exists; give a directory for the report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"-o {out}: cannot create the report directory: {exc.strerror}"
    if os.statvfs(out).f_flag & os.ST_RDONLY:
        return f"-o {out}: the directory is on a read-only file system; choose another -o"
    if not os.access(out, os.W_OK | os.X_OK):
        return f"-o {out}: permission denied: the report directory is not writable; choose another -o"
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="analysis", description="Analysis of dynsim run files")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="figures and a markdown summary with fitted numbers")
    rep.add_argument("runs", nargs="+", help="dynsim HDF5 run files (several: also compared at equal loss)")
    rep.add_argument("-o", "--output", default="report", help="output directory (default: ./report)")
    rep.add_argument("--window", nargs=2, type=float, metavar=("T0", "T1"),
                     help="fit window in time t (default: the last two decades, [t_end/100, t_end])")
    rep.add_argument("--transfer", action="store_true",
                     help="classification runs: craft FGSM/PGD examples on every replica and report their transfer "
                          "to the others, with gradient and NTK alignment")
    args = parser.parse_args(argv)
    from .report import write_report

    problem = _window_problem(args.window) or _output_problem(Path(args.output))
    if problem:
        print(f"analysis: error: {problem}", file=sys.stderr)
        return 2
    try:
        md = write_report(args.runs, args.output, window=args.window, transfer=args.transfer)
    except StoreError as exc:
        print(f"analysis: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"analysis: error: {exc}", file=sys.stderr)
        return 2
    print(f"analysis: wrote {md} and its figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
