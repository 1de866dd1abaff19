"""Recording PyTorch models: forward hooks, pooling, and two models compared in one pass."""

from rv2dist.record.recording import record_activations
from rv2dist.record.two_models import compare_models, plan_models

__all__ = ["compare_models", "plan_models", "record_activations"]
