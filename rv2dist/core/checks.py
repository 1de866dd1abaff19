"""The checks every layer makes of option values, written once: numbers, counts,
flags and repeated names.  Each raises an error naming the option and the value."""

from __future__ import annotations

import numbers

import numpy as np


def real_number(value) -> bool:
    """Whether ``value`` is a real number: Python's or a numpy scalar, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def whole_number(value) -> bool:
    """Whether ``value`` is an integer: Python's or a numpy scalar, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def flag(option, value) -> bool:
    """``value`` of a True/False option as a bool; a TypeError naming ``option`` otherwise."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{option} must be True or False, not {value!r}")
    return bool(value)


def count(option, value, *, least=1, most=None, advice="") -> int:
    """``value`` as an int from ``least`` to ``most``; a ValueError naming ``option``
    (and ``advice`` past ``most``) otherwise."""
    if not whole_number(value) or value < least:
        kind = "a positive integer" if least == 1 else f"an integer of at least {least}"
        raise ValueError(f"{option} must be {kind}, not {value!r}")
    if most is not None and value > most:
        raise ValueError(f"{option}={value:,} is more than rv2dist runs (at most {most:,}){advice}")
    return int(value)


def first_repeated(items):
    """The first item equal to one before it, or None."""
    seen = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None
