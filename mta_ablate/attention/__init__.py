"""Attention variants: the spec (no torch), the functional MTA op and the attention module (pure torch). The names
are loaded from their modules on first use, so the spec imports without torch."""

import importlib

_HOMES = {
    "PRESETS": "spec",
    "AttentionSpec": "spec",
    "LayerPlan": "spec",
    "depth_scale": "spec",
    "preset": "spec",
    "head_mix": "functional",
    "kq_conv": "functional",
    "materialized_mta_attention": "functional",
    "mta_attention": "op",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
