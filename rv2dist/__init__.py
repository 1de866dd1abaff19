"""rv2dist: RV2, CKA, RSA, CCA, Procrustes and regression similarity between network layers, exact at any n on Dask, without n x n matrices."""

from rv2dist.api import plan, rv2, similarity
from rv2dist.core.errors import (DegenerateCellWarning, FewReplicatesWarning, ShiftedIntervalWarning,
                                 UndefinedLayerWarning, UndefinedReplicateWarning, UnreadOptionWarning)
from rv2dist.planning.plan import Plan, PlanError

__version__ = "0.1.0"

# the rest loads on first use: xarray, zarr, matplotlib and torch stay out of a bare import
_LAZY = {
    "open_activations": "io.reader",
    "write_activations": "io.writer",
    "ActivationWriter": "io.writer",
    "StoreError": "io.errors",
    "convert": "io.convert",
    "record_activations": "record",
    "compare_models": "record",
    "plan_models": "record",
    "open_results": "io.results",
    "compare_cells": "differences",
    "compare_results": "differences",
    "preprocess": "core.preprocess",
    "pool_units": "core.preprocess",
    "downsample": "core.preprocess",
    "release_buffers": "engine.buffers",
}

__all__ = ["DegenerateCellWarning", "FewReplicatesWarning", "Plan", "PlanError", "ShiftedIntervalWarning", "UndefinedLayerWarning", "UndefinedReplicateWarning", "UnreadOptionWarning", "plan", "rv2",
           "similarity", *_LAZY]


def __getattr__(name):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "plot":
        # rv2dist.plot.heatmap(...) after a bare import, without importing matplotlib before
        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'rv2dist' has no attribute {name!r}")
