"""One block of query rows of the MTA op and the steps that run on its maps, on the fused CPU kernel (`kernel`) or
in pure torch (`maps`): the key-query convolution and its backward, the softmax stage (the head mixes around the
causal softmax) and its backward, and a lone head mix. `op` composes them block by block."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from mta_ablate.attention import kernel
from mta_ablate.attention.functional import key_padding
from mta_ablate.attention.maps import (
    conv_backward,
    conv_weight,
    mix_grad,
    mix_heads,
    mix_transposed,
    pad_channels_last,
    softmax_grad,
)


@dataclass(frozen=True)
class Options:
    pad_key: str
    dropout_p: float
    seed: int
    rows: int
    fused: bool  # the fused CPU kernel (`kernel`) runs the convolutions of fp32 and fp64 maps


@dataclass
class Block:
    """One block of query rows [i0, i1) and the rows its maps span: logits from r0, probabilities from p0."""

    i0: int
    i1: int
    r0: int
    p0: int
    device: torch.device

    @functools.cached_property
    def future(self) -> torch.Tensor:
        """(i1 - r0, i1) bool, key j in the future of row r0 + i (the pure-torch path's mask; the kernel needs none)."""
        return torch.ones(self.i1 - self.r0, self.i1, dtype=torch.bool, device=self.device).triu_(1 + self.r0)

    def mask_(self, x_BHRS: torch.Tensor, first_row: int, value: float) -> torch.Tensor:
        """Fill, in place, the future of a map whose rows start at `first_row`; keys up to that row are never in the
        future of any of its rows, so only the keys after it are touched."""
        rows = self.future[first_row - self.r0 :, first_row + 1 :]
        x_BHRS[..., first_row + 1 :].masked_fill_(rows, value)
        return x_BHRS

    @classmethod
    def make(cls, i0, i1, halo_pre, halo_post, device):
        p0 = max(0, i0 - halo_post)
        r0 = max(0, p0 - halo_pre)
        return cls(i0, i1, r0, p0, device)


def blocks(t, rows, pre_kernel, post_kernel, device):
    halo_pre = pre_kernel.shape[1] - 1 if pre_kernel is not None else 0
    halo_post = post_kernel.shape[1] - 1 if post_kernel is not None else 0
    for i0 in range(0, t, rows):
        yield Block.make(i0, min(t, i0 + rows), halo_pre, halo_post, device)


def _padded(x_BHRS, start, halo, c_k, pad_key):
    """A convolution's input: x holds rows [max(0, start - halo), ...); add the zero rows before row 0 and the
    key padding, channels-last. Returns the padded map and how many rows were added on top."""
    top = max(0, halo - start)
    left, right = key_padding(c_k, pad_key)
    return pad_channels_last(x_BHRS, left, right, top, 0), top


def conv_step(x, x_row0, kernel_HQK, out_row0, out_rows, opt: Options, blk: Block, saved: dict, name: str):
    """Rows [out_row0, out_row0 + out_rows) of a key-query convolution of the map x, whose rows start at x_row0 and
    whose future is zero (or, for the fused kernel, ignored); the output's future is zero. Saves its input as
    `name` (the pure-torch path: padded, and how many rows of padding are on top)."""
    if opt.fused and x.dtype in kernel.DTYPES:
        saved[name] = x
        left, _ = key_padding(kernel_HQK.shape[2], opt.pad_key)
        return kernel.ops().conv(x, x_row0, kernel_HQK.to(x.dtype), out_row0, out_rows, left, False)
    x = blk.mask_(x, x_row0, 0.0)
    c_q, c_k = kernel_HQK.shape[1:]
    saved[name], saved[f"{name}_top"] = _padded(x, out_row0, c_q - 1, c_k, opt.pad_key)
    y = F.conv2d(saved[name], conv_weight(kernel_HQK, x.dtype), groups=x.shape[1]).contiguous()
    return blk.mask_(y, out_row0, 0.0)


def conv_step_backward(dy, dy_row0, x_row0, kernel_HQK, opt: Options, blk: Block, saved: dict, name: str):
    """Input gradient (rows from x_row0, future zero) and kernel gradient of `conv_step`, from its output gradient dy
    (rows from dy_row0; its future is ignored)."""
    c_q, c_k = kernel_HQK.shape[1:]
    if f"{name}_top" not in saved:  # the forward ran the fused kernel
        ops, (left, right) = kernel.ops(), key_padding(c_k, opt.pad_key)
        dx = ops.conv(dy, dy_row0, kernel_HQK.to(dy.dtype), x_row0, blk.i1 - x_row0, right, True)
        return dx, ops.conv_kernel_grad(dy, dy_row0, saved[name], x_row0, c_q, c_k, left)
    dy = blk.mask_(dy, dy_row0, 0.0)
    dx, dk = conv_backward(dy, saved[name], kernel_HQK, saved[f"{name}_top"], opt.pad_key)
    return blk.mask_(dx, x_row0, 0.0), dk


def _mix_backward(dy, x, m):
    """Gradients of a head mix y = mix(x, m): (dx, dm)."""
    return mix_transposed(dy, m), mix_grad(dy, x, m.shape[0])


_TORCH = SimpleNamespace(mix=mix_heads, mix_=mix_heads, mix_backward_=_mix_backward)


def on(x, opt: Options):
    """A head mix on its own (the post mix after a post convolution) for maps like x: the fused kernel's or the
    pure-torch one. `mix_` and `mix_backward_` may overwrite their first argument (the kernel's do: no new map to
    allocate and fault in)."""
    if not (opt.fused and x.dtype in kernel.DTYPES):
        return _TORCH
    ops = kernel.ops()
    return SimpleNamespace(
        mix=lambda x, m: ops.mix(x, m, False),
        mix_=lambda x, m: ops.mix_(x, m, False),
        mix_backward_=lambda dy, x, m: (dy, ops.mix_backward_(dy, x, m)),  # one pass: dm, and dx over dy
    )


def softmax_stage(logits, pre_mix, post_mix, opt: Options, blk: Block, saved: dict, backward: bool):
    """Probabilities and weights of rows [p0, i1) from their logits (future not yet masked): the pre mix, the
    causal softmax, the post mix (`None`: no mix there; weights are then the probabilities). With `backward` the
    maps the backward needs are kept (the pre mix's input as `pre_mix_in`); without, the logits may be overwritten.
    The fused kernel reads and writes each map once; the two mixes must then share one grouping."""
    if opt.fused and logits.dtype in kernel.DTYPES:
        ops = kernel.ops()
        if not backward or (pre_mix is None and post_mix is None):
            weights = ops.mixed_softmax_(logits, pre_mix, post_mix, blk.p0)
            return weights, weights
        if pre_mix is not None:
            saved["pre_mix_in"] = logits
        probs, weights = ops.mixed_softmax(logits, pre_mix, post_mix, blk.p0)
        return probs, weights if post_mix is not None else probs
    if pre_mix is not None:
        saved["pre_mix_in"] = logits
        logits = mix_heads(logits, pre_mix)
    wide = torch.promote_types(logits.dtype, torch.float32)
    masked = blk.mask_(logits, blk.p0, float("-inf"))
    probs = torch.softmax(masked, dim=-1, dtype=wide).to(logits.dtype)
    return probs, mix_heads(probs, post_mix) if post_mix is not None else probs


def softmax_stage_backward(dw, probs, pre_mix, post_mix, opt: Options, blk: Block, saved: dict):
    """The gradients of `softmax_stage`: (logits, pre mix, post mix), from that of the weights (which the fused
    kernel overwrites)."""
    if opt.fused and dw.dtype in kernel.DTYPES:
        pre_in = saved.get("pre_mix_in")
        d_pre, d_post = kernel.ops().mixed_softmax_backward_(dw, probs, post_mix, pre_in, pre_mix, blk.p0)
        return dw, d_pre if pre_mix is not None else None, d_post if post_mix is not None else None
    d_pre = d_post = None
    if post_mix is not None:
        dw, d_post = _mix_backward(dw, probs, post_mix)
    dlogits = softmax_grad(dw, probs)
    if pre_mix is not None:
        dlogits, d_pre = _mix_backward(dlogits, saved["pre_mix_in"], pre_mix)
    return dlogits, d_pre, d_post
