"""`MultiTokenAttention`: projections, RoPE, the attention core (SDPA or MTA), group norm / gating, output.

Layout legend: B batch, T positions, E model dim, H heads, D head dim (E = H * D).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mta_ablate.attention.functional import key_padding
from mta_ablate.attention.init import GeneratorFor, normal, trunc_normal, uniform
from mta_ablate.attention.norm import head_norm
from mta_ablate.attention.op import mta_attention
from mta_ablate.attention.spec import AttentionSpec, LayerPlan, depth_scale, lambda_init


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin tables of shape (max_seq_len, head_dim // 2) for rotary position embeddings."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x_BHTD: torch.Tensor, cos_TF: torch.Tensor, sin_TF: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) by position-dependent angles; cos/sin are (T, D/2)."""
    x = x_BHTD.float().unflatten(-1, (-1, 2))  # (B, H, T, D/2, 2)
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack((x0 * cos_TF - x1 * sin_TF, x0 * sin_TF + x1 * cos_TF), dim=-1)
    return out.flatten(-2).to(x_BHTD.dtype)


def init_kernel(kernel_HQK: torch.Tensor, method: str, pad_key: str, generator: torch.Generator | None = None) -> None:
    """Fill a (H, c_q, c_k) key-query kernel in place (see `KernelInit`)."""
    _, c_q, c_k = kernel_HQK.shape
    left, _ = key_padding(c_k, pad_key)
    with torch.no_grad():
        if method == "uniform":
            uniform(kernel_HQK, -1.0, 1.0, generator)
            return
        kernel_HQK.fill_({"const": 0.3}.get(method, 0.0))
        if method == "identity":  # current query row (last), current key column (left pad)
            kernel_HQK[:, c_q - 1, left] = 1.0
        elif method == "diagonal":  # query i-k with key j-k, ending at the identity position
            for a in range(c_q):
                col = left - (c_q - 1 - a)
                if 0 <= col < c_k:
                    kernel_HQK[:, a, col] = 1.0


class MultiTokenAttention(nn.Module):
    """One attention layer of a decoder-only LM, configured by an `AttentionSpec` and its `LayerPlan`.

    Uses `scaled_dot_product_attention` when the layer has no MTA operation, `mta_attention` otherwise, and two
    `scaled_dot_product_attention` calls per differential head when the spec is differential. Every parameter
    an attention variant adds (kernels, head mixes, group-norm weight, gate, differential lambdas) is registered
    under a name starting with `mta_`, so variants are counted and excluded from weight decay by name.
    """

    def __init__(self, dim: int, n_heads: int, spec: AttentionSpec, plan: LayerPlan, init_std: float):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.spec, self.plan, self.init_std = spec, plan, init_std
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        self.wv = nn.Linear(dim, dim, bias=False)
        self.wo = nn.Linear(dim, dim, bias=False)
        h, d = n_heads, self.head_dim
        self.mta_pre_kernel = nn.Parameter(torch.empty(h, *plan.qk_pre)) if plan.qk_pre else None
        self.mta_post_kernel = nn.Parameter(torch.empty(h, *plan.qk_post)) if plan.qk_post else None
        self.mta_pre_head_mix = self._head_mix_param(plan.head_mix_pre)
        self.mta_post_head_mix = self._head_mix_param(plan.head_mix_post)
        # differential heads: rows lq1, lk1, lq2, lk2 of lambda; each head's output is 2 * head_dim wide
        self.mta_diff_lambda = nn.Parameter(torch.empty(4, d)) if spec.differential else None
        self.out_dim = 2 * d if spec.differential else d
        norm = spec.group_norm
        self.mta_norm_weight = nn.Parameter(torch.empty(self.out_dim)) if norm != "off" else None
        gate_out = {"gated_scalar": 1, "gated_vector": self.out_dim}.get(norm)
        self.mta_gate = nn.Linear(self.out_dim, gate_out, bias=True) if gate_out else None
        self.norm_scale = depth_scale(plan.layer_id) if norm == "depth_scaled" else 1.0
        self.reset_parameters()

    def _head_mix_param(self, c_h: int | None) -> nn.Parameter | None:
        return nn.Parameter(torch.empty(self.n_heads // c_h, c_h, c_h)) if c_h else None

    def reset_parameters(self, generator_for: GeneratorFor = lambda name: None) -> None:
        """Initial values; `generator_for(name)` gives the generator of each parameter (paired initialisation)."""
        for name in ("wq", "wk", "wv", "wo"):
            trunc_normal(getattr(self, name).weight, self.init_std, generator_for(f"{name}.weight"))
        if self.mta_pre_kernel is not None:
            init_kernel(self.mta_pre_kernel, self.spec.init, self.spec.pad_key, generator_for("mta_pre_kernel"))
        if self.mta_post_kernel is not None:
            method = self.spec.post_init or self.spec.init
            init_kernel(self.mta_post_kernel, method, self.spec.pad_key, generator_for("mta_post_kernel"))
        for mix in (self.mta_pre_head_mix, self.mta_post_head_mix):
            if mix is not None:  # head mixes start as identity
                with torch.no_grad():
                    mix.copy_(torch.eye(mix.shape[-1]).expand_as(mix))
        if self.mta_diff_lambda is not None:  # N(0, 0.1), as the DIFF Transformer's reference code
            normal(self.mta_diff_lambda, 0.1, generator_for("mta_diff_lambda"))
        if self.mta_norm_weight is not None:
            nn.init.ones_(self.mta_norm_weight)
        if self.mta_gate is not None:  # the reference leaves the bias uninitialised; 0 starts the gate at 0.5
            trunc_normal(self.mta_gate.weight, self.init_std, generator_for("mta_gate.weight"))
            nn.init.zeros_(self.mta_gate.bias)

    def forward(self, x_BTE: torch.Tensor, cos_TF: torch.Tensor, sin_TF: torch.Tensor) -> torch.Tensor:
        b, t, _ = x_BTE.shape
        h, d = self.n_heads, self.head_dim

        def heads(proj: nn.Linear) -> torch.Tensor:
            return proj(x_BTE).view(b, t, h, d).transpose(1, 2)  # (B, T, E) -> (B, H, T, D)

        q, k, v = heads(self.wq), heads(self.wk), heads(self.wv)
        q, k = apply_rope(q, cos_TF[:t], sin_TF[:t]), apply_rope(k, cos_TF[:t], sin_TF[:t])
        dropout = self.spec.dropout if self.training else 0.0
        if self.mta_diff_lambda is not None:
            out = self._differential(q, k, v, dropout)  # (B, H/2, T, 2D)
        elif self.plan.uses_mta_op:
            out = mta_attention(
                q,
                k,
                v,
                pre_kernel=self.mta_pre_kernel,
                post_kernel=self.mta_post_kernel,
                pre_head_mix=self.mta_pre_head_mix,
                post_head_mix=self.mta_post_head_mix,
                pad_key=self.spec.pad_key,
                dropout_p=dropout,
                training=self.training,
            )
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        out = out.transpose(1, 2)  # (B, H, T, D) -> (B, T, H, D); differential: (B, T, H/2, 2D)
        if self.mta_norm_weight is not None:  # with the gate, if any: (B, T, H, 1 or D)
            out = head_norm(out, self.mta_norm_weight, self.mta_gate, self.norm_scale)
        return self.wo(out.reshape(b, t, h * d))  # (B, T, E)

    def _differential(self, q_BHTD, k_BHTD, v_BHTD, dropout: float) -> torch.Tensor:
        """(softmax(Q1 K1^T) - lambda softmax(Q2 K2^T)) V per differential head: heads (2i, 2i+1) give Q1, Q2 and
        K1, K2; the value of head i is heads 2i and 2i+1 side by side. Returns (B, H/2, T, 2D)."""
        b, h, t, d = v_BHTD.shape
        v = v_BHTD.transpose(1, 2).reshape(b, t, h // 2, 2 * d).transpose(1, 2)  # (B, H/2, T, 2D)
        lq1, lk1, lq2, lk2 = self.mta_diff_lambda.to(torch.promote_types(v.dtype, torch.float32))
        lam = torch.exp((lq1 * lk1).sum()) - torch.exp((lq2 * lk2).sum()) + lambda_init(self.plan.layer_id)
        first = F.scaled_dot_product_attention(q_BHTD[:, 0::2], k_BHTD[:, 0::2], v, is_causal=True, dropout_p=dropout)
        second = F.scaled_dot_product_attention(q_BHTD[:, 1::2], k_BHTD[:, 1::2], v, is_causal=True, dropout_p=dropout)
        return first - lam.to(first.dtype) * second
