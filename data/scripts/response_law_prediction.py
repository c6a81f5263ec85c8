"""The response-law model against the network it describes (issue 23, item 3), from run files to the page.

    python data/scripts/response_law_prediction.py [--runs runs] [--results docs/results.md]

For each network config below (run once into RUNS/<name>.h5; a complete file is kept, an
interrupted one resumed) the script runs four laws with the network's own data, seed, trainer and
record steps, each starting from the network's initial function, and compares them replica by
replica (``analysis.response_law``):

* ``lazy``: each replica's own initial NTK, constant amplitude (the linearised network);
* ``aged``: the same kernel times the network's measured NTK amplitude A(t) (``amplitude = "file"``);
* ``late kernel``: the kernel's shape at the end of the run (``ntk_file``), with the measured A(t);
* ``theory``: the infinite-width NTK at initialisation, constant amplitude (no run file needed).

It then rewrites the section between the markers ``<!-- response_law:begin -->`` and
``<!-- response_law:end -->`` of the results page: every number there comes from this code.

Expected before the runs (from the seed's claim that the response factorises into A(t) K and that
the kernel's competition carves the input space):
1. the wide NTK-scaled control: every law with the network's kernel describes it to a few per cent
   (the lazy regime); the infinite-width kernel to ~1/sqrt(N) of the function's change;
2. the narrow networks (N = 16 and 32, standard scaling): the lazy law tracks the network early and
   departs once the NTK moves (feature learning), so its error grows with t; the measured amplitude
   should help where the kernel changes its size more than its shape; the late kernel should give
   the final boundaries and regions better than the initial one;
3. the regions and their boundaries, set by the data, are classified alike on most probes by every
   law, and carved within a factor of a few of the network's times.
"""
import argparse
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NETWORKS = {
    "wide": "response_law_network_wide.toml",
    "m1": "response_law_network_m1.toml",
    "m4": "response_law_network_m4.toml",
    "d2": "response_law_network_d2.toml",
}
LAWS = {
    "lazy": dict(kernel="ntk_init"),
    "aged": dict(kernel="ntk_init", amplitude="file"),
    "late kernel": dict(kernel="ntk_file", amplitude="file"),
    "theory": dict(kernel="ntk_infinite"),
}
BEGIN, END = "<!-- response_law:begin -->", "<!-- response_law:end -->"




def _law_tables(network_tables: dict, law: dict, reference: Path) -> dict:
    tables = {name: dict(values) for name, values in network_tables.items()}
    tables["model"].update(kind="response_law", reference_file=str(reference), **law)
    outputs = tables["model"].get("outputs", 1)
    record = tables["record"]
    record.pop("params", None)
    names = ["loss_train", "output", "response" if outputs == 1 else "response_outputs", "amplitude"]
    if tables["task"].get("n_test", 256):  # the never-trained samples of the plasticity comparison
        names.append("late_response")
    record["observables"] = names
    return tables


def run_all(runs: Path) -> dict:
    """{pair: {law: LawComparison}} after running whatever is missing."""
    from analysis.response_law import compare_files
    from dynsim.config import dump_toml
    from dynsim.kinds import config_from_mapping, ensure_run

    runs.mkdir(parents=True, exist_ok=True)
    out = {}
    for pair, config_name in NETWORKS.items():
        config_path = ROOT / "data" / "configs" / config_name
        network = ensure_run(config_path, runs / f"{Path(config_name).stem}.h5")
        network_tables = tomllib.loads(config_path.read_text())
        out[pair] = {}
        for law_name, law in LAWS.items():
            stem = f"response_law_{pair}_{law_name.replace(' ', '_')}"
            law_tables = _law_tables(network_tables, law, network)
            (runs / f"{stem}.toml").write_text(dump_toml(law_tables))  # the law's config beside its file
            law_file = ensure_run(config_from_mapping(law_tables), runs / f"{stem}.h5")
            out[pair][law_name] = compare_files(law_file, network)
            print(f"{pair} / {law_name}: done", file=sys.stderr)
    return out


def _cell(interval, digits=3) -> str:
    mean, low, high = interval
    return f"{mean:.{digits}g} [{low:.{digits}g}, {high:.{digits}g}]"


def findings(by_law: dict) -> list[str]:
    """What the table of one network says, in words chosen by code from its numbers."""
    from analysis.response_law import boundary_exponent

    summaries = {name: c.summary() for name, c in by_law.items()}
    out = []
    for when in ("mid", "final"):
        key = f"change_error_{when}"
        best = min(summaries, key=lambda n: summaries[n][key][0])
        out.append(f"- smallest change error {'in the middle' if when == 'mid' else 'at the end'}: {best} "
                   f"({summaries[best][key][0]:.3g})")
    first = next(iter(by_law.values()))
    if first.boundaries_law is not None:
        network = boundary_exponent(first.times, first.boundaries_network)
        overlap = []
        for name, c in by_law.items():
            law = boundary_exponent(c.times, c.boundaries_law)
            if law is not None and network is not None and law[1] <= network[2] and network[1] <= law[2]:
                overlap.append(name)
        out.append(f"- laws whose boundary-speed exponent interval overlaps the network's: "
                   f"{', '.join(overlap) if overlap else 'none'}")
    with_late = [n for n, s in summaries.items() if "late_exponents" in s and None not in s["late_exponents"]]
    if with_late:
        overlap = [n for n in with_late if summaries[n]["late_exponents"][0][1] <= summaries[n]["late_exponents"][1][2]
                   and summaries[n]["late_exponents"][1][1] <= summaries[n]["late_exponents"][0][2]]
        out.append(f"- laws whose plasticity decay exponent interval overlaps the network's: "
                   f"{', '.join(overlap) if overlap else 'none'}")
    alike = min(s["agreement_final"][0] for s in summaries.values())
    out.append(f"- probes classified alike at the end by every law: at least {alike:.1%} (mean over replicas)")
    return out


def markdown(comparisons: dict) -> str:
    titles = {"wide": "N = 1024, NTK scaling, squared loss (control)",
              "m1": "N = 16 tanh, sigmoid output with squared error, one output",
              "m4": "N = 32 tanh, cross-entropy, M = 4 outputs",
              "d2": "D = 2, N = 64 tanh, cross-entropy, M = 4 outputs (regions along x_0)"}
    lines = [BEGIN, "", "Generated by `python data/scripts/response_law_prediction.py` from the run files in `runs/`;",
             "mean [95% bootstrap interval over paired replicas]. *change error*: |Delta f_law - Delta f_net| / "
             "|Delta f_net| on the probes, Delta f = f(t) - f(0); *alike*: probes given the same class at the end; "
             "*plasticity*: the first-order response of one step on a never-trained test sample at itself, mean over "
             "the test samples (the network's recomputed from its recorded parameters); exponents over the last two "
             "decades of t; "
             "*boundary gap*: mean |x_b(law) - x_b(net)| at the end; *carve ratio*: log10(t_law / t_net) of the "
             "time each region is carved, averaged over regions.", ""]
    for pair, by_law in comparisons.items():
        first = next(iter(by_law.values()))
        n = first.f_law.shape[1]
        lines += [f"**{titles[pair]}** (`{NETWORKS[pair]}`, {n} replicas, t = eta * step up to "
                  f"{first.times[-1]:.3g}; the middle column at t = {first.summary()['t_mid']:.3g})", "",
                  "| law | change error (middle) | change error (end) | function error (end) | alike (end) | "
                  "boundary gap (end) | carve ratio | boundary speed exponent, law / network | "
                  "plasticity, law / network (end) | plasticity decay exponent, law / network |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for law_name, comparison in by_law.items():
            from analysis.response_law import boundary_exponent, replica_interval
            import numpy as np

            s = comparison.summary()
            gap = _cell(s["boundary_gap_final"]) if "boundary_gap_final" in s else "-"
            carve = "-"
            if comparison.carve_law is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    per_replica = np.nanmean(np.log10(comparison.carve_law / comparison.carve_network), axis=1)
                carve = _cell(replica_interval(np.where(np.isfinite(per_replica), per_replica, np.nan)))
            exps = "-"
            if comparison.boundaries_law is not None:
                pair_exps = [boundary_exponent(comparison.times, b) for b in (comparison.boundaries_law,
                                                                              comparison.boundaries_network)]
                if all(e is not None for e in pair_exps):
                    exps = " / ".join(f"{e[0]:.2f} [{e[1]:.2f}, {e[2]:.2f}]" for e in pair_exps)
            late = late_exps = "-"
            if "late_ratio_final" in s:
                late = _cell(s["late_ratio_final"])
                if all(e is not None for e in s["late_exponents"]):
                    late_exps = " / ".join(f"{e[0]:.2f} [{e[1]:.2f}, {e[2]:.2f}]" for e in s["late_exponents"])
            lines.append(f"| {law_name} | {_cell(s['change_error_mid'])} | {_cell(s['change_error_final'])} | "
                         f"{_cell(s['function_error_final'])} | {_cell(s['agreement_final'])} | {gap} | {carve} | "
                         f"{exps} | {late} | {late_exps} |")
        lines += [""] + findings(by_law) + [""]
    lines.append(END)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs"), help="folder of the run files (default: runs/)")
    parser.add_argument("--results", default=str(ROOT / "docs" / "results.md"), help="the page to rewrite")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = markdown(run_all(Path(args.runs)))
    from analysis.blocks import replace_block

    replace_block(args.results, "response_law", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
