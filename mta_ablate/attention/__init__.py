"""Attention variants: the spec (no torch), the functional MTA op and the attention module (pure torch). The names
are loaded from their modules on first use, so the spec imports without torch."""

from mta_ablate.lazy import lazy_names

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

__getattr__ = lazy_names(__name__, _HOMES)
