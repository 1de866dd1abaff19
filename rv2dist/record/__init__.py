"""Recording PyTorch models: forward hooks, pooling, and two models compared in one pass."""

from rv2dist.record.recording import compare_models, plan_models, record_activations

__all__ = ["compare_models", "plan_models", "record_activations"]
