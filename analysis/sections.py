"""Report sections and the registry that names them: the one dispatch table of ``analysis report``.

A kind of experiment (``dynsim.kinds``) lists by name the sections of a report on one of its files
(``report_sections``) and on a merged sweep file of them (``sweep_report_sections``). This module
maps each name to a ``ReportSection``: what the section needs from a file (observables it must
record, a further condition on the file) and how it renders (``SectionResult``: markdown lines,
numbers, figure paths). ``register_section`` adds one, for a kind defined outside dynsim; a name
no section is registered under is a ``SectionError`` naming the kind and the section.

The built-in sections are registered here, and only here, from the modules that draw them, which
import nothing of this module (so the registry can import them all without a cycle):

* kind ``simple``: ``training``, ``response``, ``kernel``, ``features``, ``fragility``,
  ``two_time`` (``analysis.simple``), ``regions`` (``analysis.regions``), ``saturation``
  (``analysis.saturation``), ``plasticity`` (``analysis.plasticity``); a merged sweep:
  ``sweep_table`` (``analysis.simple``);
* kind ``mlp``: ``deep``, and ``deep_sweep`` for a sweep (``analysis.deep``);
* kind ``maxnorm_chain``: ``chain``, and ``chain_points`` for a sweep (``analysis.chain``);
* kind ``response_law``: ``law_vs_network`` (``analysis.response_law``), besides the simple
  network's ``training``, ``response``, ``kernel`` and ``regions``, which read its files unchanged;
* any run file: ``time_series`` (``analysis.timeseries``).
"""
import dataclasses
from collections.abc import Callable
from pathlib import Path

from dynsim.kinds import kind_of_file
from dynsim.store import RunReader
from dynsim.sweep import is_sweep_file, sweep_points

from . import chain, deep, plasticity, regions, response_law, saturation, simple, timeseries
from .figures import gallery, pyplot


class SectionError(ValueError):
    """A kind names a report section that is not registered, or a section is registered twice.

    A ValueError, so that ``analysis report`` prints it as one line (exit code 2)."""


@dataclasses.dataclass
class SectionResult:
    """What one section adds to a report: markdown lines, numbers (name -> value), figure paths.

    The figures are shown below the text of the file's whole part (``figures.gallery``), so ``lines``
    do not link them."""
    lines: list = dataclasses.field(default_factory=list)
    numbers: dict = dataclasses.field(default_factory=dict)
    figures: list = dataclasses.field(default_factory=list)


class ReportSource:
    """One file (or one point ``group`` of a merged sweep file) being reported, and what its sections
    share: the output directory, the fit window (None: each section's default) and, opened on first
    use and closed with the source, its ``RunReader``. Sections of files that are not run files
    (chains, merged sweeps) read ``path`` themselves and never touch ``reader``."""

    def __init__(self, path, out_dir, *, kind: str, window=None, group: str | None = None):
        self.path = path
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.window = window
        self.group = group
        self.stem = Path(path).stem + (f"_{group.replace('/', '_')}" if group else "")
        self._reader = None

    @property
    def reader(self) -> RunReader:
        if self._reader is None:
            self._reader = RunReader(self.path, self.group)
        return self._reader

    def close(self):
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclasses.dataclass(frozen=True)
class ReportSection:
    """A named part of a report.

    ``render(source) -> SectionResult`` draws it. It is rendered only where it applies: the run
    file records every name in ``observables`` and ``applies(source)`` (when given) is true; a
    section with neither always applies (and does not open the source's reader to find out)."""
    name: str
    render: Callable
    observables: frozenset = frozenset()
    applies: Callable | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise SectionError("a report section needs a non-empty string name")
        if not callable(self.render):
            raise SectionError(f"report section {self.name!r}: render must be callable")
        object.__setattr__(self, "observables", frozenset(self.observables))

    def applies_to(self, source: ReportSource) -> bool:
        if self.observables and not self.observables <= set(source.reader.observable_names):
            return False
        return self.applies is None or bool(self.applies(source))


SECTIONS: dict[str, ReportSection] = {}


def register_section(section: ReportSection, *, replace: bool = False) -> ReportSection:
    """Add ``section`` under its name; returns it. A different section of the same name is refused
    unless ``replace``."""
    if not isinstance(section, ReportSection):
        raise SectionError(f"register_section takes a ReportSection, got {type(section).__name__}")
    if section.name in SECTIONS and SECTIONS[section.name] is not section and not replace:
        raise SectionError(f"a report section named {section.name!r} is registered already")
    SECTIONS[section.name] = section
    return section


def unregister_section(name: str) -> None:
    SECTIONS.pop(name, None)


def get_section(name: str, kind: str | None = None) -> ReportSection:
    """The section registered as ``name``; a ``SectionError`` naming ``kind`` and the section otherwise."""
    try:
        return SECTIONS[name]
    except (KeyError, TypeError):
        who = f"kind {kind!r} lists report section {name!r}" if kind else f"report section {name!r}"
        raise SectionError(f"{who}, which is not registered (registered sections: "
                           f"{', '.join(map(repr, SECTIONS))}); add it with analysis.sections.register_section") \
            from None


# -- which sections a file gets ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReportPlan:
    """The sections a file gets: of its kind (``kind`` None for a merged sweep with no stored point,
    which has no kind to ask) for one file, or for a merged sweep file (``sweep``)."""
    path: object
    kind: str | None
    sweep: bool
    sections: tuple

    @property
    def section_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sections)


def plan_report(path) -> ReportPlan:
    """Ask the kind that wrote ``path`` (for a merged sweep file, the kind of its first stored point)
    which sections it gets, and resolve them; ``SectionError`` for a name that is not registered."""
    sweep = is_sweep_file(path)
    if sweep:
        points = sweep_points(path)
        if not points:
            return ReportPlan(path, None, True, ())
        kind = kind_of_file(path, points[0][0])
        names = kind.sweep_report_sections
    else:
        kind = kind_of_file(path)
        names = kind.report_sections
    return ReportPlan(path, kind.name, sweep, tuple(get_section(n, kind.name) for n in names))


@dataclasses.dataclass
class FileReport:
    """One file's part of a report: the sections that applied, their lines (the part's figures shown at
    its end), their numbers merged, and the figure paths."""
    path: str
    kind: str
    sections: list
    lines: list
    numbers: dict
    figures: list


def render_file(path, out_dir, sections, *, kind: str, window=None, group: str | None = None) -> FileReport:
    """Render ``sections`` (``ReportSection``s or registered names), in order, on one file or point
    ``group``: every one that applies, their lines joined and followed by the part's figures."""
    resolved = [s if isinstance(s, ReportSection) else get_section(s, kind) for s in sections]
    lines, numbers, figures, used = [], {}, [], []
    with ReportSource(path, out_dir, kind=kind, window=window, group=group) as source:
        for section in resolved:
            if not section.applies_to(source):
                continue
            result = section.render(source)
            lines += result.lines
            numbers.update(result.numbers)
            figures += result.figures
            used.append(section.name)
    if not used:
        lines = [f"## {source.stem}", "", f"- none of the report sections of kind {kind!r} "
                 f"({', '.join(s.name for s in resolved) or 'none listed'}) applies to `{path}`"]
    return FileReport(str(path), kind, used, lines + gallery(figures), numbers, figures)


# -- the built-in sections ---------------------------------------------------------------------------------
def _drawn(draw):
    """A render function from a drawing function ``draw(source, plt) -> (lines, numbers, figures)``."""
    def render(source):
        return SectionResult(*draw(source, pyplot()))

    return render


def _carves_regions(source) -> bool:
    """A run of M > 1 outputs with the probe outputs recorded: its report is the region analysis,
    which replaces the one-output saturation and plasticity sections."""
    rd = source.reader
    return "output" in rd.observable_names and rd.model_attrs.get("outputs", 1) > 1


def _one_output_saturating(source) -> bool:
    return not _carves_regions(source) and source.reader.training_attrs["loss"] in saturation.SATURATING_LOSSES


def _chain_file(source, plt):
    _, lines, numbers, figures = chain.chain_parts(source.path, source.out_dir, plt, source.group)
    return lines, numbers, figures


for _section in (
        ReportSection("training", _drawn(simple.training_section),
                      description="heading, file, fit window, training and test loss"),
        ReportSection("response", _drawn(simple.response_section), observables={"response"},
                      description="decay of the response amplitude A(t) and its rank-one share"),
        ReportSection("kernel", _drawn(simple.kernel_section), observables={"ntk"},
                      description="relative change and decay of the empirical NTK"),
        ReportSection("features", _drawn(simple.features_section), observables={"effective_rank"},
                      description="effective rank and participation ratio of the hidden features"),
        ReportSection("fragility", _drawn(simple.fragility_section), observables={"input_grad_norm"},
                      description="input-gradient norm and flip distance of the probes"),
        ReportSection("regions", _drawn(lambda s, plt: regions.regions_section(s.reader, s.stem, s.out_dir, plt)),
                      applies=_carves_regions, description="region map and boundaries of an M-output network"),
        ReportSection("saturation", _drawn(lambda s, plt: saturation.saturation_section(
                          s.reader, s.stem, s.out_dir, plt, s.window)),
                      observables={"output", "ntk"}, applies=_one_output_saturating,
                      description="saturation-driven aging beside its derived exponents"),
        ReportSection("plasticity", _drawn(lambda s, plt: plasticity.plasticity_section(
                          s.reader, s.stem, s.out_dir, plt)),
                      applies=_one_output_saturating, description="boundary motion and the late-sample response"),
        ReportSection("two_time", _drawn(simple.two_time_section), applies=lambda s: s.reader.has_two_time,
                      description="autocorrelation and mean squared displacement, and their aging collapse"),
        ReportSection("sweep_table", _drawn(lambda s, plt: simple.sweep_table_section(
                          s.path, s.out_dir, plt, s.window)),
                      description="table and heat maps of a merged sweep of one-hidden-layer runs"),
        ReportSection("deep", _drawn(lambda s, plt: deep.deep_run_parts(s.path, s.out_dir, plt, s.group)),
                      description="accuracy, neuron modes, basins, feature collapse and grokking of a deep MLP"),
        ReportSection("deep_sweep", _drawn(lambda s, plt: deep.deep_sweep_parts(s.path, s.out_dir, plt)),
                      description="per-point table and per-axis curves (double descent) of a sweep of deep MLPs"),
        ReportSection("chain", _drawn(_chain_file),
                      description="collapse, distances, norm growth, wormhole and flip-label of a max-norm chain"),
        ReportSection("chain_points", _drawn(lambda s, plt: chain.chain_points_parts(s.path, s.out_dir, plt)),
                      description="the chain section of every stored point of a merged sweep of chains"),
        ReportSection("law_vs_network", _drawn(response_law.law_vs_network_section), observables={"output"},
                      description="the response-law model against its reference network: function error, regions, "
                                  "boundaries, carving times"),
        ReportSection("time_series", _drawn(timeseries.time_series_section),
                      description="every (record, replica) observable over time, final mean with a 95% interval"),
):
    register_section(_section)
del _section
