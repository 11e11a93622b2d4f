"""The decoder-only language model (pure torch)."""

from mta_ablate.model.presets import MODEL_PRESETS, model_preset
from mta_ablate.model.transformer import (
    ModelConfig,
    TransformerLM,
    is_mta_param,
    lm_loss,
    paper_mta_overhead,
)

__all__ = [
    "MODEL_PRESETS",
    "ModelConfig",
    "TransformerLM",
    "is_mta_param",
    "lm_loss",
    "model_preset",
    "paper_mta_overhead",
]
