"""rv2dist: RV2, RV and CKA similarity between network layers, on Dask, without n x n matrices."""

from .api import FewReplicatesWarning, UndefinedLayerWarning, UndefinedReplicateWarning, plan, rv2, similarity
from .plan import Plan, PlanError

__version__ = "0.1.0"

# the rest loads on first use: xarray, zarr and torch stay out of a bare import
_LAZY = {
    "open_activations": "store",
    "write_activations": "store",
    "ActivationWriter": "store",
    "StoreError": "store",
    "convert": "conversion",
    "record_activations": "record",
    "compare_models": "record",
    "plan_models": "record",
    "open_results": "results",
    "compare_cells": "differences",
    "compare_results": "differences",
    "preprocess": "transforms",
    "pool_units": "transforms",
    "downsample": "transforms",
    "release_buffers": "buffers",
}

__all__ = ["FewReplicatesWarning", "Plan", "PlanError", "UndefinedLayerWarning", "UndefinedReplicateWarning", "plan", "rv2",
           "similarity", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'rv2dist' has no attribute {name!r}")
