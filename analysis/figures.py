"""Figure helpers shared by every report section: the backend, saving, the ensemble band, the gallery.

Sections draw with ``pyplot()`` and hand each finished figure to ``save``, so that every PNG of a
report is written (and its memory released) the same way; ``gallery`` gives the markdown that
shows a part's figures below its text.
"""
from pathlib import Path

import numpy as np

from . import quantities as q

DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend: reports are written on machines without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> str:
    """Write ``fig`` as a PNG at ``path`` and close it; returns the path as a string.

    Closing matters: pyplot keeps every open figure alive, and a report draws dozens of them.
    """
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return str(path)


def band_plot(ax, t, values, label, color=None, log_x=True):
    """The median over replicas of ``values`` [record, replica] against ``t``, with its 10-90 % band.

    On a log time axis (``log_x``) the records at t <= 0 are left out, as the axis cannot show them.
    """
    band = q.ensemble_band(values)
    keep = t > 0 if log_x else np.ones(len(t), dtype=bool)
    line, = ax.plot(t[keep], band[1][keep], label=label, color=color)
    ax.fill_between(t[keep], band[0][keep], band[2][keep], alpha=0.2, color=line.get_color())
    return line


def image_links(figures) -> list[str]:
    """One markdown image line per figure (PNG paths written next to ``report.md``)."""
    return [f"![{Path(f).stem}]({Path(f).name})" for f in figures]


def gallery(figures) -> list[str]:
    """The markdown that closes a part of the report: a blank line, one image per figure, a blank line."""
    return [""] + image_links(figures) + [""]
