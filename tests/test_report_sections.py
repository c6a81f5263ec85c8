"""``analysis.sections``: the registry behind ``analysis report``, the generic ``time_series`` section
and the shared figure helpers, on a tiny real run (its numbers checked against NumPy on the arrays
read back with ``RunReader``) and on copies of it relabelled as kinds the test registers itself."""
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from analysis import figures
from analysis.cli import main as analysis_main
from analysis.report import write_report
from analysis.sections import (SECTIONS, ReportSection, SectionError, SectionResult, get_section, register_section,
                               render_file, unregister_section)
from analysis.timeseries import LOG_SPAN
from dynsim import kinds
from dynsim.simple_experiment import Simulation
from dynsim.store import RunReader

from conftest import small_config

OBSERVABLES = ("loss_train", "loss_test", "response", "effective_rank", "participation_ratio")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    config = small_config(run=dict(replicas=4, steps=200), record=dict(n_records=10, observables=OBSERVABLES))
    path = tmp_path_factory.mktemp("sections") / "tiny.h5"
    assert Simulation(config).run(path, progress=False).ok
    return path


def _relabelled(run_file, tmp_path, kind, name="relabelled.h5"):
    """A copy of the run whose root attribute says it was written by ``kind``."""
    path = tmp_path / name
    shutil.copy(run_file, path)
    with h5py.File(path, "r+") as f:
        f.attrs["kind"] = kind
    return path


class _ListedKind:
    """Just enough of a kind for the report: its name and the sections it lists."""

    def __init__(self, name, report_sections, sweep_report_sections=()):
        self.name = name
        self.report_sections = report_sections
        self.sweep_report_sections = sweep_report_sections


@pytest.fixture
def listed_kind():
    registered = []

    def make(name, sections):
        registered.append(name)
        return kinds.register(_ListedKind(name, sections))

    yield make
    for name in registered:
        kinds.unregister(name)


def test_every_section_a_kind_lists_is_registered():
    for kind in kinds.registered().values():
        for name in tuple(kind.report_sections) + tuple(kind.sweep_report_sections):
            assert get_section(name, kind.name).name == name


def test_time_series_final_mean_and_interval_match_numpy(run_file, tmp_path):
    """One line and one figure per (record, replica) observable; a replica made non-finite at the last
    record is skipped, counted, and left out of the mean and interval."""
    path = tmp_path / "tiny_nan.h5"
    shutil.copy(run_file, path)
    with RunReader(path) as rd:
        last = rd.n_records - 1
    with h5py.File(path, "r+") as f:
        f["observables/loss_train"][last, 1] = np.nan
    report = render_file(path, tmp_path, ["time_series"], kind="simple")
    with RunReader(path) as rd:
        scalar = [n for n in rd.observable_names if rd.observable(n).ndim == 2]
        arrays = {n: rd.observable(n) for n in scalar}
        t = rd.times
    assert report.sections == ["time_series"]
    assert "response" not in scalar and set(report.numbers["time_series"]) == set(scalar)
    positive = t[t > 0]
    assert report.numbers["time_series_log_t"] == bool(positive.max() / positive.min() >= LOG_SPAN)
    text = "\n".join(report.lines)
    assert "mean +- 1.96 standard errors" in text
    for name, values in arrays.items():
        final = values[-1]
        kept = final[np.isfinite(final)]
        mean = kept.mean()
        half = 1.96 * kept.std(ddof=1) / math.sqrt(kept.size)
        stats = report.numbers["time_series"][name]
        assert stats["n_finite"] == kept.size and stats["n_skipped"] == final.size - kept.size
        assert stats["mean"] == pytest.approx(mean, rel=1e-12)
        assert stats["ci"] == pytest.approx((mean - half, mean + half), rel=1e-12)
        assert (f"- {name}: mean {mean:.4g}, 95% interval [{mean - half:.4g}, {mean + half:.4g}], over {kept.size} "
                f"replicas; {final.size - kept.size} non-finite replicas skipped") in text
        png = tmp_path / f"tiny_nan_{name}_series.png"
        assert png.stat().st_size > 1000 and f"({png.name})" in text
    assert report.numbers["time_series"]["loss_train"]["n_skipped"] == 1


def test_write_report_dispatches_through_the_kind_of_the_file(run_file, tmp_path, listed_kind):
    """A kind registered here, listing only the generic section, gets exactly that section, and none of
    the one-hidden-layer network's (which its file would otherwise satisfy)."""
    listed_kind("listed_time_series", ("time_series",))
    path = _relabelled(run_file, tmp_path, "listed_time_series")
    text = write_report([path], tmp_path / "rep").read_text()
    with RunReader(path) as rd:
        final = rd.observable("loss_train")[-1]
    assert "## relabelled: per-replica time series" in text and f"mean {final.mean():.4g}" in text
    assert "final training loss" not in text and not (tmp_path / "rep" / "relabelled_loss.png").exists()
    assert (tmp_path / "rep" / "relabelled_loss_train_series.png").exists()


def test_an_unknown_section_names_the_kind_and_the_section(run_file, tmp_path, listed_kind, capsys):
    with pytest.raises(SectionError, match="kind 'simple' lists report section 'no_such_section'"):
        render_file(run_file, tmp_path, ["training", "no_such_section"], kind="simple")
    listed_kind("listed_typo", ("time_series", "time_serise"))
    path = _relabelled(run_file, tmp_path, "listed_typo")
    out = tmp_path / "rep"
    with pytest.raises(SectionError) as err:
        write_report([run_file, path], out)
    assert "'listed_typo'" in str(err.value) and "'time_serise'" in str(err.value)
    assert not list(out.glob("*.png"))  # resolved before anything was drawn
    assert analysis_main(["report", str(path), "-o", str(out)]) == 2
    message = capsys.readouterr().err
    assert message.startswith("analysis: error:") and "'time_serise'" in message and "Traceback" not in message


def test_a_registered_section_renders_where_it_applies(run_file, tmp_path, listed_kind):
    """Sections render in the kind's order, only where the file records what they need; a second section
    of the same name is refused unless it replaces the first."""
    with RunReader(run_file) as rd:
        names = rd.observable_names

    def count(source):
        count = len(source.reader.observable_names)
        return SectionResult([f"- {count} observables"], {"count": count}, [])

    present = ReportSection("test_count", count, observables={"loss_train"})
    absent = ReportSection("test_count_ntk", count, observables={"ntk"})
    try:
        register_section(present)
        register_section(absent)
        assert "ntk" not in names
        with pytest.raises(SectionError, match="registered already"):
            register_section(ReportSection("test_count", count))
        listed_kind("listed_counts", ("test_count_ntk", "test_count"))
        report = render_file(_relabelled(run_file, tmp_path, "listed_counts"), tmp_path,
                             kinds.get("listed_counts").report_sections, kind="listed_counts")
        assert report.sections == ["test_count"] and report.numbers == {"count": len(names)}
        assert report.lines[0] == f"- {len(names)} observables"
        replacement = register_section(ReportSection("test_count", count, observables={"ntk"}), replace=True)
        assert SECTIONS["test_count"] is replacement
    finally:
        unregister_section("test_count")
        unregister_section("test_count_ntk")
    assert "test_count" not in SECTIONS


def test_the_simple_sections_apply_by_what_the_run_records(run_file, tmp_path):
    """The one-hidden-layer run here records the loss, the response and the feature ranks, with no NTK,
    no input gradients, no outputs and no two-time grid: exactly those sections render."""
    report = render_file(run_file, tmp_path, kinds.get("simple").report_sections, kind="simple")
    assert report.sections == ["training", "response", "features"]
    with RunReader(run_file) as rd:
        loss = rd.observable("loss_train")
    assert report.numbers["final_loss_mean"] == pytest.approx(np.nanmean(loss[-1]), rel=1e-12)
    assert [Path(f).name for f in report.figures] == ["tiny_loss.png", "tiny_response.png", "tiny_features.png"]
    assert report.lines[-len(report.figures) - 2:] == figures.gallery(report.figures)


def test_save_writes_a_png_and_closes_the_figure(tmp_path):
    plt = figures.pyplot()
    plt.close("all")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = figures.save(fig, tmp_path / "line.png")
    assert path == str(tmp_path / "line.png")
    assert (tmp_path / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == []


def test_kernel_course_says_where_the_amplitude_falls_and_rises():
    from analysis.simple import _kernel_course

    t = np.geomspace(1.0, 1e4, 41)
    # falls like t^-1/2 to t = 100, then grows like t^1/4: three replicas with small offsets
    curve = np.where(t <= 100, t ** -0.5, 0.1 * (t / 100) ** 0.25)
    amplitude = np.stack([curve * f for f in (0.9, 1.0, 1.1)], axis=1)
    numbers = {}
    (line,) = _kernel_course(t, amplitude, numbers)
    assert numbers["kernel_min_t"] == 100.0
    assert numbers["kernel_fall"] == pytest.approx(10.0) and numbers["kernel_rise"] == pytest.approx(10.0 ** 0.5)
    assert "falls by a factor 10 to its minimum at t = 100, then rises by a factor 3.16" in line


def test_figures_draw_the_preferred_decay_model_only():
    from analysis.simple import fit_lines

    rng = np.random.default_rng(4)
    t = np.geomspace(1.0, 1e4, 60)
    exponential = np.exp(-t / 300.0)[:, None] * np.exp(0.01 * rng.standard_normal((60, 8)))
    power = (t ** -0.7)[:, None] * np.exp(0.01 * rng.standard_normal((60, 8)))
    _, numbers, fit = fit_lines("x", t, exponential, (10.0, 3000.0))
    label, values = fit.curve(np.array([300.0]))
    assert numbers["x_best_model"] == "exponential" and label.startswith("A exp(-t / ")
    p = fit.comparison.models["exponential"].params
    assert p["tau"] == pytest.approx(300.0, rel=0.02)  # the data's own time scale, to its 1 % noise
    assert values[0] == pytest.approx(p["A"] * np.exp(-300.0 / p["tau"]), rel=1e-12)
    _, numbers, fit = fit_lines("y", t, power, (10.0, 1e4))
    label, _ = fit.curve(t)
    assert numbers["y_best_model"] == "power_law" and label.startswith("t^-0.7")


def test_a_kernel_fit_across_a_minimum_is_flagged():
    from analysis.simple import kernel_fit_caveat

    inside = dict(kernel_min_t=1e4, kernel_rise=1.12)
    assert "averages a fall and a rise" in kernel_fit_caveat(inside, (500.0, 5e4))
    assert kernel_fit_caveat(inside, (2e4, 5e4)) == ""  # the minimum is before the window
    assert kernel_fit_caveat(dict(kernel_min_t=1e4, kernel_rise=1.01), (500.0, 5e4)) == ""  # no real rise
