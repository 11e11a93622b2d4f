"""The decoder-only language model (pure torch)."""

from mta_ablate.model.presets import model_preset, model_presets
from mta_ablate.model.transformer import (
    ModelConfig,
    TransformerLM,
    is_mta_param,
    lm_loss,
    paper_mta_overhead,
    token_nll,
)

__all__ = [
    "ModelConfig",
    "TransformerLM",
    "is_mta_param",
    "lm_loss",
    "token_nll",
    "model_preset",
    "model_presets",
    "paper_mta_overhead",
]
