"""Names the user gives: layer names and selections of layers."""

from __future__ import annotations

from collections.abc import Mapping

from rv2dist.core.checks import first_repeated


def name_list(names, option):
    """``names`` (one name, or a list, tuple or other iterable of names) as a list of
    strings; a TypeError naming ``option`` otherwise."""
    if isinstance(names, str):
        return [names]
    try:
        listed = list(names)
    except TypeError:
        listed = None
    if listed is None or not all(isinstance(name, str) for name in listed):
        raise TypeError(f"{option} must be a name or a list of names (strings), not {names!r}")
    return listed


def select(layers, wanted, side):
    """The ``wanted`` layers of ``[(name, array)]``, in that order (all when None)."""
    if wanted is None:
        return layers
    by_name = dict(layers)
    missing = [w for w in wanted if w not in by_name]
    if missing:
        raise ValueError(f"{side} has no layer {missing[0]!r}; it has {', '.join(by_name)}")
    return [(w, by_name[w]) for w in wanted]


def is_pair(value) -> bool:
    """Whether an option's value is a pair ``(a's, b's)`` of name lists (or a name
    and a list) rather than one list of names."""
    def names(side):
        return isinstance(side, str) or (hasattr(side, "__iter__") and not isinstance(side, (bytes, Mapping)))

    return (isinstance(value, (tuple, list)) and len(value) == 2 and all(names(side) for side in value)
            and not all(isinstance(side, str) for side in value))


def split_layer_selection(layers, self_job):
    """``layers=`` as ``(a's names, b's names)``: one list for both, or a pair."""
    if layers is None:
        return None, None
    if is_pair(layers):
        if self_job:
            raise ValueError("layers=(a, b) needs b; for a against itself give one list")
        return _layer_list(layers[0]), _layer_list(layers[1])
    return _layer_list(layers), _layer_list(layers)


def _layer_list(names):
    try:
        names = name_list(names, "layers")  # "fc1" is one layer, not three
    except TypeError:
        raise TypeError(f"layers must be a layer name, a list of names, or a pair (a's, b's) of lists, "
                        f"not {names!r}") from None
    if not names:
        raise ValueError("layers is empty; name the layers to compare, or leave it out for all")
    repeated = first_repeated(names)
    if repeated is not None:
        raise ValueError(f"layers names {repeated!r} twice")
    return names
