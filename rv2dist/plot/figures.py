"""New figures, and saving them crash-safely."""

from __future__ import annotations

from pathlib import Path

DPI = 200
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def check_figure_path(path, what="plot") -> Path:
    """``path`` when a figure can be saved there (a known suffix, an existing folder);
    a ValueError naming it otherwise, before any work."""
    path = Path(path)
    if path.suffix not in FIGURE_SUFFIXES:
        raise ValueError(f"{what} {path} must end in {' or '.join(FIGURE_SUFFIXES)}")
    if not path.parent.exists():
        raise ValueError(f"{what} {path}: folder {path.parent} does not exist")
    return path


def new_axes(path, figsize, **grid):
    """A new figure: a plain Figure when it only goes to a file (no GUI backend is
    involved, as on a cluster node), else through pyplot so that notebooks show it."""
    if path is not None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=figsize, layout="constrained")
        return figure, figure.subplots(**grid)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize, layout="constrained", **grid)


def save(figure, path) -> None:
    """Save ``figure`` at ``path`` in the format its suffix names (PNG at :data:`DPI`),
    under a hidden name first: a crash leaves the old file or none, never a partial
    one that a job's rerun would take for drawn."""
    from matplotlib import rcParams

    from rv2dist.io.atomic import naming, written_atomically

    path = Path(path)
    if not path.suffix:  # as Matplotlib names it: its default format's suffix added
        path = path.with_name(f"{path.name}.{rcParams['savefig.format']}")
    with written_atomically(path) as partial, naming(path, "cannot save the figure"):
        figure.savefig(partial, dpi=DPI, format=path.suffix[1:].lower())
