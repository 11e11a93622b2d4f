"""`mta_attention`: the Multi-Token Attention op, memory-lean and causal-aware, with a hand-written backward.

Layout legend as in `functional`: B batch, H heads, T queries, S keys, D head dim, G head groups, C group size.

It computes exactly what `functional.materialized_mta_attention` computes (the order of operations is listed
there), one block of query rows at a time:
- a block of rows [i0, i1) only needs keys [0, i1): every later key is in the future of every row of the block,
  and the zero (or -inf) it would hold is what the padding of the convolutions supplies anyway, so the masked
  part of each (T, S) map, nearly half of it, is never computed;
- a key-query convolution over c_q query rows needs c_q - 1 earlier rows (its halo), so a block computes the
  logits of its rows plus the halo of each convolution (the post-softmax one needs the probabilities of its
  halo rows, hence the logits of their own halo);
- nothing of the maps is kept for the backward: the forward saves q, k, v and the parameters, and the
  backward recomputes each block's maps and back-propagates through them by hand (the gradients of a matmul,
  a head mix, a softmax and a depthwise convolution). Saved memory is O(S); the peak of either pass is one
  block's maps instead of a stack of (B, H, T, S) tensors.
The price is one more forward of the maps in the backward; the skipped causal half pays for most of it. Small
maps (at most `KEEP_ELEMENTS` elements, as in the toy model) are saved by the forward instead: there the
recomputation costs more than the memory it saves, at most a few MiB per layer.

Two paths compute each block's maps (`block`). On CPU tensors in fp32 or fp64 the fused kernel (`kernel`, C++
built by `make install`) runs the key-query convolutions, their input and kernel gradients, and the softmax stage
(pre mix, causal softmax, post mix, and its backward, each in one pass over the maps) over each row's past keys only,
straight on row-major maps. Everywhere else (CUDA, bf16, a machine
without the build) the pure-torch path runs: head mixes as a matmul over the head axis of contiguous maps (G
matrices of C x C applied to B * T * S columns), the key-query convolutions channels-last (oneDNN's depthwise path
on CPU, cuDNN's on GPU). Both compute the same function (tests hold them to 1e-5 relative in fp32). Dropout on the
weights draws its mask from a generator seeded per block from one draw of the global generator, so the backward
recomputes the same mask.
"""

from __future__ import annotations

import contextlib

import torch

from mta_ablate.attention import kernel
from mta_ablate.attention.block import (
    Block,
    Options,
    blocks,
    conv_step,
    conv_step_backward,
    on,
    softmax_stage,
    softmax_stage_backward,
)

BLOCK_ELEMENTS = 2**19
"""Default size of one block's maps in elements (B * H * rows * S): 2 MiB in fp32. Measured on a 2-core CPU: at
S = 128 and 256, 64-row blocks were as fast as whole maps and faster than 32-row ones; at long contexts small
blocks are what keeps the peak memory low."""


KEEP_ELEMENTS = 2**20
"""Maps of at most this many elements (B * H * T * S) are saved for the backward, not recomputed (a few maps of
4 MiB in fp32 per layer). Measured on a 2-core CPU at the toy model's shape (B64 H2 S57, one layer, fwd+bwd):
26 ms kept against 35 ms recomputed."""


FUSED_MIN_ROWS = 64
"""At least this many rows per block for the fused CPU kernel, which skips each row's future key by key: fewer, taller
blocks recompute less halo (10 rows per block for 6x11 pre and post). Measured on a 2-core CPU at the paper layer and
the needle-ladder shapes: 64-row blocks beat 32 and 128."""


ACCELERATOR_BLOCK_ELEMENTS = 2**25
"""Block size on an accelerator (CUDA, and the meta device that stands for one when counting): 64 MiB per bf16 map.
A GPU runs each block as a few dozen kernel launches, so blocks are large: one paper MTA layer (B1 H16 S2048 D64,
6x11 pre and post, full head mixing) is 2 blocks of 1,024 rows, under 1,500 aten ops forward and backward."""

ACCELERATOR_MIN_ROWS = 256
"""At least this many rows per block on an accelerator: the recomputed halo (c_q - 1 rows per convolution, 10 for
6x11 pre and post) then stays under 4% of the logits work."""

_tiling: list[str] = []  # a device type to tile for instead of the tensors' own (`tiled_as`)


def block_rows(b: int, h: int, s: int, device_type: str = "cpu") -> int:
    """Query rows per block. CPU: as many as keep one block's (B, H, rows, S) map under `BLOCK_ELEMENTS` (cache-sized),
    at least 16. Accelerators (cuda, meta): under `ACCELERATOR_BLOCK_ELEMENTS`, at least `ACCELERATOR_MIN_ROWS`."""
    if device_type == "cpu":
        return max(16, min(s, BLOCK_ELEMENTS // max(1, b * h * s)))
    return max(min(s, ACCELERATOR_MIN_ROWS), min(s, ACCELERATOR_BLOCK_ELEMENTS // max(1, b * h * s)))


@contextlib.contextmanager
def tiled_as(device_type: str):
    """Within the block, `mta_attention` tiles as on `device_type` whatever its tensors' device (a memory plan on fake
    CPU tensors for a CUDA run)."""
    _tiling.append(device_type)
    try:
        yield
    finally:
        _tiling.pop()


def _logits(q, k, pre_kernel, blk: Block, opt: Options, saved: dict) -> torch.Tensor:
    """Pre-softmax logits of rows [p0, i1) over keys [0, i1), before the pre mix, future not yet masked (q is
    already scaled by D**-0.5)."""
    logits = torch.matmul(q[:, :, blk.r0 : blk.i1], k[:, :, : blk.i1].transpose(-2, -1))
    if pre_kernel is not None:
        logits = conv_step(logits, blk.r0, pre_kernel, blk.p0, blk.i1 - blk.p0, opt, blk, saved, "pre_in")
    return logits


def _inner_post_mix(params):
    """The post mix when the softmax stage runs it: no post convolution between them, and (for the fused kernel's
    one pass) the same grouping as the pre mix. Otherwise the post mix runs on its own, after the convolution."""
    _, post_kernel, pre_mix, post_mix = params
    if post_mix is None or post_kernel is not None or (pre_mix is not None and pre_mix.shape != post_mix.shape):
        return None
    return post_mix


def _maps(q, k, params, blk: Block, opt: Options, backward: bool = True):
    """One block's probabilities and weights of rows [i0, i1), and the intermediate maps their backward needs
    (`backward`; without it the maps are overwritten in place along the way)."""
    pre_kernel, post_kernel, pre_mix, post_mix = params
    saved: dict = {}
    inner = _inner_post_mix(params)
    logits = _logits(q, k, pre_kernel, blk, opt, saved)
    probs, weights = softmax_stage(logits, pre_mix, inner, opt, blk, saved, backward)
    if post_kernel is not None:
        weights = conv_step(probs, blk.p0, post_kernel, blk.i0, blk.i1 - blk.i0, opt, blk, saved, "post_in")
    if post_mix is not None and inner is None:
        if backward:
            saved["post_mix_in"] = weights
            weights = on(weights, opt).mix(weights, post_mix)
        else:
            weights = on(weights, opt).mix_(weights, post_mix)
    if opt.dropout_p > 0.0:
        generator = torch.Generator(device=probs.device).manual_seed(opt.seed + blk.i0)
        keep = torch.rand(weights.shape, generator=generator, device=probs.device) >= opt.dropout_p
        saved["keep"] = keep
        weights = weights * keep / (1.0 - opt.dropout_p)
    return saved, probs, weights


def _backward_block(grad_out, q, k, v, params, blk: Block, opt: Options, grads, maps=None):
    """Add one block's contributions to `grads` (dq, dk, dv, then the parameters), from its maps as the forward
    kept them (`maps`: its saved dict, probabilities and weights) or, by default, recomputed. q is already scaled
    by D**-0.5, and so is the dq it gets."""
    pre_kernel, post_kernel, pre_mix, post_mix = params
    dq, dk, dv, d_pre, d_post, d_pre_mix, d_post_mix = grads
    saved, probs, weights = maps or _maps(q, k, params, blk, opt)
    inner = _inner_post_mix(params)
    dv[:, :, : blk.i1] += torch.matmul(weights.transpose(-2, -1), grad_out)
    dw = torch.matmul(grad_out, v[:, :, : blk.i1].transpose(-2, -1))  # d(weights)
    if opt.dropout_p > 0.0:
        dw = dw * saved["keep"] / (1.0 - opt.dropout_p)
    if post_mix is not None and inner is None:
        dw, dm = on(dw, opt).mix_backward_(dw, saved["post_mix_in"], post_mix)
        d_post_mix += dm
    if post_kernel is not None:
        dw, dk_post = conv_step_backward(dw, blk.i0, blk.p0, post_kernel, opt, blk, saved, "post_in")
        d_post += dk_post
    dlogits, dm_pre, dm_post = softmax_stage_backward(dw, probs, pre_mix, inner, opt, blk, saved)
    if dm_pre is not None:
        d_pre_mix += dm_pre
    if dm_post is not None:
        d_post_mix += dm_post
    if pre_kernel is not None:
        dlogits, dk_pre = conv_step_backward(dlogits, blk.p0, blk.r0, pre_kernel, opt, blk, saved, "pre_in")
        d_pre += dk_pre
    dq[:, :, blk.r0 : blk.i1] += torch.matmul(dlogits, k[:, :, : blk.i1])
    dk[:, :, : blk.i1] += torch.matmul(dlogits.transpose(-2, -1), q[:, :, blk.r0 : blk.i1])


def _flatten(kept: list) -> tuple[list, list]:
    """Kept maps of each block as a flat tensor list (for `save_for_backward`) and how to rebuild them."""
    tensors, layout = [], []
    for saved, probs, weights in kept:
        keys = [k for k, v in saved.items() if torch.is_tensor(v)]
        tensors += [probs, weights, *(saved[k] for k in keys)]
        layout.append((keys, {k: v for k, v in saved.items() if not torch.is_tensor(v)}))
    return tensors, layout


def _unflatten(tensors: list, layout: list) -> list:
    kept, i = [], 0
    for keys, rest in layout:
        probs, weights, *maps = tensors[i : i + 2 + len(keys)]
        kept.append(({**dict(zip(keys, maps, strict=True)), **rest}, probs, weights))
        i += 2 + len(keys)
    return kept


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    """The forward's autocast state on its device, which the backward restores so that it recomputes the maps in
    the forward's dtypes (what `torch.amp.custom_fwd` / `custom_bwd` do, for whichever device the inputs are on)."""
    if device_type not in ("cpu", "cuda"):
        return ("cpu", False, torch.bfloat16)
    return (device_type, torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type))


class _BlockedMTA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, pre_kernel, post_kernel, pre_mix, post_mix, opt):
        params = (pre_kernel, post_kernel, pre_mix, post_mix)
        keep = any(ctx.needs_input_grad) and q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] <= KEEP_ELEMENTS
        # (B, T, H, D) in memory, as SDPA returns it: the model's transpose back to (B, T, H, D) is then free
        out, kept = q.new_empty(q.shape[0], q.shape[2], q.shape[1], v.shape[3]).transpose(1, 2), []
        for blk in blocks(q.shape[2], opt.rows, pre_kernel, post_kernel, q.device):
            maps = _maps(q, k, params, blk, opt, backward=keep)
            out[:, :, blk.i0 : blk.i1] = torch.matmul(maps[2], v[:, :, : blk.i1])
            if keep:
                kept.append(maps)
        maps, ctx.layout = _flatten(kept)
        ctx.save_for_backward(q, k, v, *params, *maps)
        ctx.opt = opt
        ctx.autocast = _autocast_state(q.device.type)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        with torch.autocast(*ctx.autocast[:1], enabled=ctx.autocast[1], dtype=ctx.autocast[2]):
            return _BlockedMTA._backward(ctx, grad_out)

    @staticmethod
    def _backward(ctx, grad_out):
        saved = ctx.saved_tensors  # read once: activation checkpointing allows one unpack
        q, k, v, *params = saved[:7]
        kept = _unflatten(saved[7:], ctx.layout) or None
        acc = torch.promote_types(q.dtype, torch.float32)
        tensors = (q, k, v, *params)
        grads = [None if x is None else torch.zeros(x.shape, dtype=acc, device=x.device) for x in tensors]
        grad_out = grad_out.to(q.dtype).contiguous()  # an expanded gradient (of a sum) sends bmm down a slow path
        for i, blk in enumerate(blocks(q.shape[2], ctx.opt.rows, params[0], params[1], q.device)):
            maps = kept[i] if kept else None
            _backward_block(grad_out[:, :, blk.i0 : blk.i1], q, k, v, params, blk, ctx.opt, grads, maps)
        return (*(None if g is None else g.to(x.dtype) for g, x in zip(grads, tensors, strict=True)), None)


def mta_attention(
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
    rows: int | None = None,
) -> torch.Tensor:
    """Causal Multi-Token Attention.

    q, k, v: (B, H, T, D), (B, H, S, D), (B, H, S, D) with T == S (training and teacher-forced eval).
    pre_kernel, post_kernel: (H, c_q, c_k) key-query kernels, or None.
    pre_head_mix, post_head_mix: (H // c_h, c_h, c_h); W[g, o, i] is the weight from input head g*c_h+i
        to output head g*c_h+o; or None.
    rows: query rows per block (default `block_rows`); the result does not depend on it.
    Returns (B, H, T, D) in q's dtype; the softmax runs in fp32. With nothing set this is causal softmax
    attention. The same function as `functional.materialized_mta_attention`, computed block by block.
    """
    b, h, t, _ = q.shape
    if t != k.shape[2]:
        raise ValueError(f"mta_attention needs as many queries as keys (T == S), got T={t}, S={k.shape[2]}")
    p = dropout_p if training else 0.0
    seed = int(torch.randint(2**62, (1,))) if p > 0.0 else 0
    tiling = _tiling[-1] if _tiling else q.device.type
    fused = tiling == "cpu" and kernel.usable(q)
    rows = rows or (max(min(t, FUSED_MIN_ROWS), block_rows(b, h, t)) if fused else block_rows(b, h, t, tiling))
    opt = Options(pad_key, p, seed, rows, fused)
    q = q.contiguous() * q.shape[-1] ** -0.5  # scale D, not S: once here, not in every block's logits and gradients
    # q, k, v contiguous once: a model's (B, T, H, D) views would otherwise be copied by every block's matmuls
    return _BlockedMTA.apply(
        q, k.contiguous(), v.contiguous(), pre_kernel, post_kernel, pre_head_mix, post_head_mix, opt
    )
