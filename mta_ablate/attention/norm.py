"""The head norm of an MTA layer: RMSNorm over each head's output (weight, optional depth scale), then optionally the
paper's gate, out * sigmoid(Linear(out)). On CPU maps in fp32/fp64 with a scalar gate or none, the fused kernel
(`kernel`) runs it in one pass forward and one backward; everywhere else (CUDA, bf16, a vector gate, no build) it is
plain torch, the reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mta_ablate.attention import kernel

EPS = 1e-5


def head_norm(x: torch.Tensor, weight: torch.Tensor, gate: nn.Linear | None, scale: float) -> torch.Tensor:
    """x: (..., D). RMSNorm(x) * weight * scale, then x * sigmoid(gate(x)) when there is a gate; statistics in fp32
    at least (bf16 inputs are widened, as the reference computes them)."""
    if x.dtype in kernel.DTYPES and kernel.usable(x) and (gate is None or gate.out_features == 1):
        g, b = (None, None) if gate is None else (gate.weight, gate.bias)
        return _HeadNorm.apply(x, weight, g, b, scale)
    wide = torch.promote_types(x.dtype, torch.float32)
    normed = F.rms_norm(x.to(wide), (x.shape[-1],), weight.to(wide), eps=EPS)
    out = (normed * scale if scale != 1.0 else normed).to(x.dtype)
    return out * torch.sigmoid(gate(out)) if gate is not None else out


class _HeadNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, g, b, scale):
        y, r, sg = kernel.ops().head_norm(x, weight, g, b, scale, EPS)
        ctx.save_for_backward(x, weight, g, r, sg)
        ctx.scale = scale
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, g, r, sg = ctx.saved_tensors
        dx, dw, dg, db = kernel.ops().head_norm_backward(dy, x, weight, g, r, sg, ctx.scale)
        return dx, dw.to(weight.dtype), None if g is None else dg.to(g.dtype), None if g is None else db, None
