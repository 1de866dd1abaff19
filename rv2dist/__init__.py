"""rv2dist: RV2, RV and CKA similarity between network layers, on Dask, without n x n matrices."""

from .api import UndefinedLayerWarning, plan, rv2, similarity
from .plan import Plan, PlanError

__version__ = "0.1.0"

__all__ = [
    "Plan",
    "PlanError",
    "UndefinedLayerWarning",
    "plan",
    "rv2",
    "similarity",
    "open_activations",
    "write_activations",
]


def __getattr__(name):
    if name in ("open_activations", "write_activations"):
        from . import store

        return getattr(store, name)
    raise AttributeError(f"module 'rv2dist' has no attribute {name!r}")
