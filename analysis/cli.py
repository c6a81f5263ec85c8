"""``analysis report RUN.h5 [RUN.h5 ...] -o DIR`` (also ``python -m analysis report ...``).

Exit codes: 0 done, 2 bad input (a missing, truncated or foreign file, named in one line).
"""
import argparse
import sys

from dynsim.store import StoreError


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
