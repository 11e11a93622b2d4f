"""The decoder-only language model (pure torch). `ModelConfig` and the shapes import without torch; the names are
loaded from their modules on first use."""

import importlib

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


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
