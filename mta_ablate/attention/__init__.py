"""Attention variants: the spec, the functional MTA op and the attention module (pure torch)."""

from mta_ablate.attention.functional import head_mix, kq_conv, materialized_mta_attention
from mta_ablate.attention.op import mta_attention
from mta_ablate.attention.spec import PRESETS, AttentionSpec, LayerPlan, depth_scale, preset

__all__ = [
    "PRESETS",
    "AttentionSpec",
    "LayerPlan",
    "depth_scale",
    "head_mix",
    "kq_conv",
    "materialized_mta_attention",
    "mta_attention",
    "preset",
]
