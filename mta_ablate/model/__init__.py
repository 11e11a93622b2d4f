"""The decoder-only language model (pure torch). `ModelConfig` and the shapes import without torch; the names are
loaded from their modules on first use."""

from mta_ablate.lazy import lazy_names

_HOMES = {
    "ModelConfig": "config",
    "model_preset": "presets",
    "model_presets": "presets",
    "TransformerLM": "transformer",
    "is_mta_param": "transformer",
    "lm_loss": "transformer",
    "paper_mta_overhead": "transformer",
    "token_nll": "transformer",
}
__all__ = sorted(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
