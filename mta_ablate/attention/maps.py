"""The pieces of the MTA op that work on one map (B, H, T, S) and their gradients, by hand: head mixes as a matmul
over the head axis, the softmax backward, and the depthwise key-query convolution's padding, weight and backward.
`op` composes them block by block."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mta_ablate.attention.functional import CHANNELS_LAST, key_padding


def mix_heads(x_BHTS: torch.Tensor, mix_GCC: torch.Tensor) -> torch.Tensor:
    """out[:, g*C + o] = sum_i mix[g, o, i] * x[:, g*C + i], as one matmul over contiguous maps."""
    b, h, t, s = x_BHTS.shape
    g, c, _ = mix_GCC.shape
    return torch.matmul(mix_GCC.to(x_BHTS.dtype), x_BHTS.reshape(b, g, c, t * s)).view(b, h, t, s)


def mix_transposed(x_BHTS: torch.Tensor, mix_GCC: torch.Tensor) -> torch.Tensor:
    return mix_heads(x_BHTS, mix_GCC.transpose(-1, -2))


def mix_grad(dy_BHTS: torch.Tensor, x_BHTS: torch.Tensor, groups: int) -> torch.Tensor:
    """Gradient of a head mix's (G, C, C) matrix: sum over batch and positions of dy[g*C+o] * x[g*C+i]."""
    b, h, t, s = x_BHTS.shape
    dy, x = dy_BHTS.reshape(b, groups, h // groups, t * s), x_BHTS.reshape(b, groups, h // groups, t * s)
    return torch.matmul(dy, x.transpose(-1, -2)).sum(0)


def softmax_grad(dp: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Softmax backward (dL = P * (dP - rowsum(P * dP))) in fp32 or wider."""
    wide = torch.promote_types(p.dtype, torch.float32)
    pf, dpf = p.to(wide), dp.to(wide)
    return (pf * (dpf - (pf * dpf).sum(-1, keepdim=True))).to(dp.dtype)


def pad_channels_last(x_BHRS, left, right, top, bottom):
    """Zero padding straight into a channels-last buffer: one copy (F.pad then a layout change is two)."""
    b, h, r, s = x_BHRS.shape
    shape = (b, h, r + top + bottom, s + left + right)
    out = torch.empty(shape, dtype=x_BHRS.dtype, device=x_BHRS.device, memory_format=CHANNELS_LAST).zero_()
    out[:, :, top : top + r, left : left + s] = x_BHRS
    return out


def conv_weight(kernel_HQK, dtype):
    return kernel_HQK.to(dtype).unsqueeze(1).contiguous(memory_format=CHANNELS_LAST)  # (H, 1, c_q, c_k)


def conv_backward(dy_BHTS, x, kernel_HQK, top, pad_key):
    """Input and kernel gradients of a depthwise key-query convolution, the input gradient only over the map.

    The input gradient of a cross-correlation is a cross-correlation of the zero-padded output gradient with the
    flipped kernel; run as a forward convolution it is about 1.7x faster on CPU than the input half of
    `convolution_backward`, and it computes only the map's rows and keys (not the padding's)."""
    h, c_q, c_k = kernel_HQK.shape
    left, right = key_padding(c_k, pad_key)
    weight = conv_weight(kernel_HQK, x.dtype)
    dy_padded = pad_channels_last(dy_BHTS, right, left, c_q - 1 - top, c_q - 1)
    t, s = dy_BHTS.shape[2:]
    dy = dy_padded[:, :, c_q - 1 - top : c_q - 1 - top + t, right : right + s]  # channels-last view, no copy
    _, dw, _ = torch.ops.aten.convolution_backward(
        dy, x, weight, None, [1, 1], [0, 0], [1, 1], False, [0, 0], h, [False, True, False]
    )
    dx = F.conv2d(dy_padded, weight.flip(2, 3).contiguous(memory_format=CHANNELS_LAST), groups=h)
    return dx.contiguous(), dw.squeeze(1)
