"""The text of figures: measure labels, names shown as they are, comparison titles."""

from __future__ import annotations

from rv2dist.core.measures import MEASURES
from rv2dist.io.results import network_names


def measure_label(metric) -> str:
    """A measure's short name for colour bars and titles (long names, from the
    results, go on the diagonal's axis)."""
    known = MEASURES.get(metric)
    return known.label if known is not None else metric


def plain(text) -> str:
    """``text`` shown as it is: a name is never Matplotlib mathtext (``$`` escaped)."""
    return str(text).replace("$", r"\$")


def comparison_name(result, label) -> str:
    """``"<a> vs <b>"`` from a single result's network names, else its label."""
    network_a, network_b = network_names(result)
    return f"{plain(network_a)} vs {plain(network_b)}" if network_a else plain(label)
