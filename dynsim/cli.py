"""Command line: ``dynsim run | resume | info | repair | measure | sweep | compile | derive | config-keys``.

Exit codes: 0 success, 1 unexpected error, 2 bad input (config, arguments, files; also a file that
another dynsim process is writing), 3 the run diverged, 130 interrupted, 141 the output pipe was
closed early (``dynsim info F | head``).
"""
import argparse
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool whose reader closed the pipe


def _parser() -> argparse.ArgumentParser:
    from . import kinds

    p = argparse.ArgumentParser(prog="dynsim", description="Simulate training of small networks as a "
                                                           "stochastic dynamical system.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("run", help="train an ensemble from a TOML config and write an HDF5 file")
    r.add_argument("config", help="TOML config file")
    r.add_argument("-o", "--output", help="HDF5 output (default: next to the config, same name with .h5)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    r.add_argument("--backend", choices=("cpu", "cuda"), help="override run.backend of the config")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    c = sub.add_parser("resume", help="continue an interrupted or killed run to its configured end")
    c.add_argument("file", help="HDF5 file written by dynsim run")
    c.add_argument("--config", help="refuse unless the file was made from this config")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    i = sub.add_parser("info", help="summarise a run file")
    i.add_argument("file", help="HDF5 file written by dynsim run")
    i.add_argument("--config", action="store_true", help="print the stored config (TOML) instead")
    rp = sub.add_parser("repair", help="clear the open-for-write flag a killed writer left in its file, so that "
                                       "plain h5py opens it again (nothing else changes)")
    rp.add_argument("file", help="HDF5 file whose writer was killed (SIGKILL, power loss)")
    ck = sub.add_parser("config-keys", help="list every config key of every kind with its default and allowed values")
    ck.add_argument("--kind", choices=tuple(kinds.registered()), help="only this kind's tables ([model] kind)")
    k = sub.add_parser("compile", help="compile ahead of time every kernel a kind of run can use (once per "
                                       "install; runs then start in a second)")
    which = k.add_mutually_exclusive_group()
    which.add_argument("--kind", choices=tuple(kinds.registered()), default=kinds.DEFAULT_KIND,
                       help="the kind of experiment ([model] kind; default: simple)")
    which.add_argument("--all", action="store_true", help="every kind")
    k.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no summary")
    m = sub.add_parser("measure", help="recompute observables from a run's recorded trajectory ([record] params) "
                                       "into a new run file")
    m.add_argument("file", help="HDF5 run file that records its parameters")
    m.add_argument("-o", "--output", required=True, help="HDF5 output for the measurements")
    m.add_argument("--observables", nargs="+", metavar="NAME", help="what to measure (default: what the run recorded)")
    where = m.add_mutually_exclusive_group()
    where.add_argument("--probes", metavar="FILE.npy", help="probe inputs [n, input_dim] instead of the run's")
    where.add_argument("--probe-grid", type=int, metavar="N", help="N probes per input axis over the training "
                                                                    "inputs' range (input_dim 1 or 2)")
    m.add_argument("--sources", nargs="+", type=int, metavar="INDEX", help="source samples (training-set indices)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    m.add_argument("-q", "--quiet", action="store_true", help="no summary")
    w = sub.add_parser("sweep", help="run a parameter sweep on dask.distributed (local cluster by default)")
    w.add_argument("sweep", help="sweep TOML file: base config plus axes")
    w.add_argument("-o", "--output", help="directory for the points (default: from the sweep file); "
                                          "the merged file is OUTPUT.h5")
    w.add_argument("--scheduler", help="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    w.add_argument("--workers", type=int, help="local cluster: worker processes (default: one per core)")
    w.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    from .theory.cli import register as register_derive

    register_derive(sub)
    return p


def _cmd_run(args) -> int:
    from . import kinds
    from .engine import install_signal_handlers
    from .precompile import compile_notice

    from .config import read_toml_file
    from .store import StoreError

    tables = read_toml_file(args.config)
    config = kinds.config_from_mapping(tables)
    kind = kinds.kind_of(config)
    if args.backend:
        config = kind.with_backend(config, args.backend)
    output = Path(args.output) if args.output else Path(args.config).with_suffix(".h5")
    if output.resolve() == Path(args.config).resolve():
        raise StoreError(f"-o {output} is the config file itself; the run would replace it: choose another "
                         "output file")
    if not args.quiet and not any(tables.values()):
        print(f"dynsim: {args.config} sets no keys: running every default of the {kind.name} kind "
              "('dynsim config-keys' lists them)", file=sys.stderr)
    if not args.output:
        print(f"dynsim: no -o given; writing {output}", file=sys.stderr)
    install_signal_handlers()
    with compile_notice(kind, enabled=not args.quiet):
        result = kind.run(config, output, overwrite=args.overwrite, progress=False if args.quiet else None)
    return _report(result, output, args.quiet)


def _report(result, output, quiet) -> int:
    if result.code == "completed":
        if not quiet:
            print(f"dynsim: {result.message}" + (f"; wrote {output}" if getattr(result, "written", True) else ""))
        return EXIT_OK
    print(f"dynsim: {result.message}; wrote {output}", file=sys.stderr)
    return EXIT_INTERRUPTED if result.code == "interrupted" else EXIT_DIVERGED


def _cmd_resume(args) -> int:
    from . import kinds
    from .engine import install_signal_handlers
    from .precompile import compile_notice

    kind = kinds.kind_of_file(args.file)
    expect = kinds.load_config(args.config) if args.config else None
    install_signal_handlers()
    with compile_notice(kind, enabled=not args.quiet):
        result = kind.resume(args.file, progress=False if args.quiet else None, expect_config=expect)
    return _report(result, args.file, args.quiet)


def _cmd_info(args) -> int:
    from . import kinds
    from .sweep import describe_sweep, is_sweep_file

    if is_sweep_file(args.file):
        print(describe_sweep(args.file))
        return EXIT_OK
    kind = kinds.kind_of_file(args.file)
    print(kind.config_text(args.file) if args.config else kind.summary(args.file))
    return EXIT_OK


def _cmd_repair(args) -> int:
    from .reading import repair

    print(f"dynsim: {repair(args.file)}")
    return EXIT_OK


def _cmd_measure(args) -> int:
    import numpy as np

    from .trajectory import measure_run
    from .spec import ConfigError

    probes = None
    if args.probes:
        try:
            probes = np.load(args.probes)
        except (OSError, ValueError) as exc:
            raise ConfigError("--probes", f"cannot read {args.probes} as a .npy array: {exc}") from None
    out = measure_run(args.file, args.output, observables=args.observables, probes=probes,
                      probe_grid_points=args.probe_grid, sources=args.sources, overwrite=args.overwrite)
    if not args.quiet:
        print(f"dynsim: measured {args.file}; wrote {out}")
    return EXIT_OK


def _cmd_derive(args) -> int:
    from .theory.cli import run_derive

    return run_derive(args)


def _cmd_sweep(args) -> int:
    import dataclasses

    from .sweep import failed_points, load_sweep, run_sweep

    sweep = load_sweep(args.sweep, output=args.output, scheduler=args.scheduler)
    if args.workers:
        sweep = dataclasses.replace(sweep, workers=args.workers)
    status = run_sweep(sweep, progress=False if args.quiet else None)
    unfinished = {i: s for i, s in status.items() if s["code"] != "completed"}
    done = len(status) - len(unfinished)
    where = f"{sweep.merged_path} and {sweep.output}/" if sweep.merge else f"{sweep.output}/"
    print(f"dynsim sweep: {done}/{len(sweep.points)} points completed; wrote {where} (index.json lists them)",
          file=sys.stderr if unfinished else sys.stdout)
    for i, s in sorted(unfinished.items()):
        print(f"  point {i:04d} {s['code']}: {s['message']}", file=sys.stderr)
    if not unfinished:
        return EXIT_OK
    return EXIT_ERROR if failed_points(status) else EXIT_DIVERGED


def _cmd_compile(args) -> int:
    from . import kinds
    from .precompile import precompile

    chosen = tuple(kinds.registered().values()) if args.all else (kinds.get(args.kind),)
    seconds = precompile(chosen, progress=not args.quiet)
    if not args.quiet:
        for kind, s in seconds.items():
            print(f"dynsim compile: {kind}: kernels ready ({s:.1f} s)")
    return EXIT_OK


def config_keys_text(kind_names=None) -> str:
    """Every config key of the chosen kinds (default: all), table by table, in aligned columns."""
    import dataclasses

    from . import kinds

    chosen = [kinds.get(name) for name in kind_names] if kind_names else list(kinds.registered().values())
    rows, out = [], []
    for kind in chosen:
        rows.append((f"# kind {kind.name!r}: {kind.description}", None))
        for table, cls in kind.sections.items():
            note = f'  (with [model] kind = "{kind.name}")' if kind.name != kinds.DEFAULT_KIND else ""
            rows.append((f"[{table}]{note}", None))
            defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                        for f in dataclasses.fields(cls)}
            for key, allowed, doc in cls.describe():
                rows.append((key, (repr(defaults[key]), doc, allowed)))
        rows.append(("", None))
    key_width = max(len(key) for key, cells in rows if cells) + 2
    default_width = min(24, max(len(cells[0]) for _, cells in rows if cells))
    for key, cells in rows:
        if cells is None:
            out.append(key)
            continue
        default, doc, allowed = cells
        out.append(f"  {key:<{key_width}} = {default:<{default_width}}  {doc}; {allowed}")
    return "\n".join(out).rstrip() + "\n"


def _cmd_config_keys(args) -> int:
    sys.stdout.write(config_keys_text([args.kind] if args.kind else None))
    return EXIT_OK


def main(argv=None) -> int:
    from .spec import ConfigError
    from .store import StoreError

    args = _parser().parse_args(argv)
    handlers = {"run": _cmd_run, "resume": _cmd_resume, "info": _cmd_info, "config-keys": _cmd_config_keys,
                "derive": _cmd_derive, "sweep": _cmd_sweep, "compile": _cmd_compile,
                "repair": _cmd_repair, "measure": _cmd_measure}
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at interpreter exit
        return code
    except (ConfigError, StoreError) as exc:
        print(f"dynsim: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:
        # the reader of our output went away (``dynsim config-keys | head``): stop quietly, as Unix
        # tools killed by SIGPIPE do, without a traceback at interpreter exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
