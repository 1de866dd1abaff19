"""Figures of results in the style of the seed study: heatmaps (layers of A down,
layers of B across), grids of them for a job, and the similarity of corresponding layers.

Every function draws on Matplotlib axes it is given (or makes its own) and returns
them, so panels compose into a paper's figure; ``path=`` also saves (PNG at 200 dpi,
SVG or PDF by the suffix), crash-safely: a figure is written under a hidden name and
moved into place whole.  Matplotlib is imported only when drawing.

Where things are: :mod:`~rv2dist.plot.heatmaps` (one matrix), :mod:`~rv2dist.plot.grids`
(a job's panels, the diagonal against depth), :mod:`~rv2dist.plot.data` (what a figure
reads of a result: the matrix, marked cells, colour range), :mod:`~rv2dist.plot.labels`
(text) and :mod:`~rv2dist.plot.figures` (new figures, saving).
"""

from rv2dist.plot.data import default_range
from rv2dist.plot.figures import DPI, FIGURE_SUFFIXES
from rv2dist.plot.grids import diagonal, job_grid
from rv2dist.plot.heatmaps import heatmap

__all__ = ["DPI", "FIGURE_SUFFIXES", "default_range", "diagonal", "heatmap", "job_grid"]
