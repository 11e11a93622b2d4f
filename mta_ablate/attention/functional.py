"""`materialized_mta_attention`: Multi-Token Attention on whole (B, H, T, S) maps, left to autograd.

This is the readable statement of the op, and the previous implementation that `mta-ablate bench attention`
measures the memory-lean `op.mta_attention` against; models use the latter.

Layout legend: B batch, H heads, T query positions, S key positions (T == S here),
D head dim, G head groups, C head group size c_h. Tensors are named by layout: `q_BHTD`, `scores_BHTS`.

Order of operations (the paper's reference code after its June 2025 fix):
    logits = q k^T / sqrt(D)
    pre kernel:    zero the future logits, pad (c_q-1 rows on top; keys per pad_key), depthwise conv
    pre head mix:  mix the H logit maps within each group of c_h heads
    -inf on the future, softmax over keys in fp32
    post kernel:   pad, depthwise conv of the weights, zero the future again (no renormalisation)
    post head mix: mix the H weight maps within each group
    dropout (training only), weights @ v

Layout: the (B, H, T, S) maps are
kept channels-last (memory order B, T, S, H) from the first convolution to the last head mix, so the
depthwise convolution (conv2d, groups=H) and the head mix (a 1x1 conv2d, groups=G, i.e. one small GEMM
per group over T*S rows) both run on oneDNN's fast channels-last path. The causal mask is one broadcast
(T, S) boolean tensor. Do not wrap this in torch.compile on CPU: it loses the channels-last conv path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CHANNELS_LAST = torch.channels_last


def key_padding(c_k: int, pad_key: str) -> tuple[int, int]:
    """(left, right) zero padding of the key axis for a key kernel of size c_k."""
    if pad_key == "both":
        return (c_k - 1) // 2, (c_k - 1) // 2
    if pad_key == "left":
        return c_k - 1, 0
    if pad_key == "right":
        return 0, c_k - 1
    raise ValueError(f"pad_key={pad_key!r}: allowed values are 'both', 'left', 'right'")


def causal_future_mask(t: int, s: int, device: torch.device) -> torch.Tensor:
    """(T, S) bool, True where key j is in the future of query i (j > i)."""
    return torch.ones(t, s, dtype=torch.bool, device=device).triu_(1)


def kq_conv(maps_BHTS: torch.Tensor, kernel_HQK: torch.Tensor, pad_key: str) -> torch.Tensor:
    """Depthwise 2-D cross-correlation of each head's (T, S) map with its own (c_q, c_k) kernel.

    maps_BHTS must already be zero in the future. Query axis padded causally (c_q-1 rows on top), so output
    row i only reads rows i-c_q+1..i. Returns (B, H, T, S) in channels-last memory order.
    """
    h, c_q, c_k = kernel_HQK.shape
    left, right = key_padding(c_k, pad_key)
    padded = F.pad(maps_BHTS, (left, right, c_q - 1, 0))  # (B, H, T+c_q-1, S+c_k-1)
    padded = padded.contiguous(memory_format=CHANNELS_LAST)
    weight = kernel_HQK.unsqueeze(1).contiguous(memory_format=CHANNELS_LAST)  # (H, 1, c_q, c_k)
    return F.conv2d(padded, weight, groups=h)  # (B, H, T, S), channels-last


def head_mix(maps_BHTS: torch.Tensor, mix_GCC: torch.Tensor) -> torch.Tensor:
    """Mix head maps within groups: out[g*C + o] = sum_i mix[g, o, i] * maps[g*C + i].

    A 1x1 grouped conv2d: on channels-last input this is G GEMMs of (B*T*S, C) x (C, C).
    Returns (B, H, T, S) in channels-last memory order.
    """
    g, c, _ = mix_GCC.shape
    weight = mix_GCC.reshape(g * c, c, 1, 1)  # (H, C, 1, 1): row g*C+o holds mix[g, o, :]
    return F.conv2d(maps_BHTS.contiguous(memory_format=CHANNELS_LAST), weight, groups=g)


def materialized_mta_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    pre_kernel: torch.Tensor | None = None,
    post_kernel: torch.Tensor | None = None,
    pre_head_mix: torch.Tensor | None = None,
    post_head_mix: torch.Tensor | None = None,
    pad_key: str = "both",
    dropout_p: float = 0.0,
    training: bool = False,
) -> torch.Tensor:
    """Causal Multi-Token Attention (autograd keeps about 7 (B, H, T, S) tensors for the backward).

    q, k, v: (B, H, T, D), (B, H, S, D), (B, H, S, D) with T == S (training and teacher-forced eval).
    pre_kernel, post_kernel: (H, c_q, c_k) key-query kernels, or None.
    pre_head_mix, post_head_mix: (H // c_h, c_h, c_h); W[g, o, i] is the weight from input head g*c_h+i
        to output head g*c_h+o; or None.
    Returns (B, H, T, D) in q's dtype; the softmax runs in fp32. With nothing set this is causal softmax
    attention.
    """
    b, h, t, d = q.shape
    s = k.shape[2]
    if t != s:
        raise ValueError(f"mta_attention needs as many queries as keys (T == S), got T={t}, S={s}")
    future_TS = causal_future_mask(t, s, q.device)

    scores_BHTS = torch.matmul(q, k.transpose(-2, -1)) * d**-0.5  # (B, H, T, S)
    if pre_kernel is not None:
        scores_BHTS = kq_conv(scores_BHTS.masked_fill(future_TS, 0.0), pre_kernel, pad_key)
    if pre_head_mix is not None:
        scores_BHTS = head_mix(scores_BHTS, pre_head_mix)
    scores_BHTS = scores_BHTS.masked_fill(future_TS, float("-inf"))
    # softmax over keys in fp32 (or wider); .contiguous() puts the key axis back innermost for speed.
    softmax_dtype = torch.promote_types(q.dtype, torch.float32)
    weights_BHTS = torch.softmax(scores_BHTS.contiguous(), dim=-1, dtype=softmax_dtype).to(q.dtype)
    if post_kernel is not None:
        weights_BHTS = kq_conv(weights_BHTS, post_kernel, pad_key).masked_fill(future_TS, 0.0)
    if post_head_mix is not None:
        weights_BHTS = head_mix(weights_BHTS, post_head_mix)
    if training and dropout_p > 0.0:
        weights_BHTS = F.dropout(weights_BHTS, p=dropout_p, training=True)
    return torch.matmul(weights_BHTS.contiguous(), v)  # (B, H, T, D)
