"""Attention benchmark: SDPA vs a straightforward MTA reference vs the previous and the current MTA op, the latter on
both its paths (the fused CPU kernel, and pure torch: the reference and GPU path).

    mta-ablate bench attention [--repeats 7] [--device cpu|cuda] [--dtype fp32|bf16] [--json]

Every variant runs on the same tensors, interleaved round-robin in one process, so the ratios are
comparable even on a noisy shared machine; times are medians in ms. "Saved" is the memory autograd keeps
for the backward of one layer (unique storages seen by a saved-tensor hook), also in units of one
(B, H, S, S) fp32 map. The longest context each op trains at is `bench.context`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from mta_ablate.attention import kernel
from mta_ablate.attention.functional import head_mix, key_padding, materialized_mta_attention
from mta_ablate.attention.maps import mix_heads
from mta_ablate.attention.op import mta_attention
from mta_ablate.machine import cpu_model


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    heads: int
    seq: int
    head_dim: int
    kernel: tuple[int, int] = (6, 11)


SHAPES = (
    Shape("paper layer", 8, 4, 256, 64),
    Shape("tiny model", 16, 4, 128, 32),
    Shape("wide heads", 4, 8, 256, 32),
)


# -- the straightforward reference: what the paper's code does -------------------------------------


def reference_mta(q, k, v, pre_kernel, post_kernel, pre_mix, post_mix, pad_key="both"):
    """A transcription of the reference code's forward: float additive (B, H, T, S) mask, boolean
    index_put zeroing, NCHW conv2d, einsum head mixing. Same math as `mta_attention`, none of its layout care."""
    b, h, t, d = q.shape
    mask = torch.full((t, t), float("-inf"), device=q.device).triu(1).repeat(b, h, 1, 1)  # (B, H, T, S)
    scores = torch.matmul(q, k.transpose(-2, -1)) / d**0.5
    scores[mask == float("-inf")] = 0.0
    scores = _nchw_conv(scores, pre_kernel, pad_key)
    scores = torch.einsum("bhts,oh->bots", scores, pre_mix[0])  # full H x H mix
    probs = torch.softmax((scores + mask).float(), dim=-1).to(q.dtype)
    probs = _nchw_conv(probs, post_kernel, pad_key)
    probs = probs.masked_fill(mask == float("-inf"), 0.0)
    probs = torch.einsum("bhts,oh->bots", probs, post_mix[0])
    return torch.matmul(probs, v)


def _nchw_conv(x, kernel, pad_key):
    c_q, c_k = kernel.shape[1:]
    left, right = key_padding(c_k, pad_key)
    return F.conv2d(F.pad(x, (left, right, c_q - 1, 0)), kernel.unsqueeze(1), groups=kernel.shape[0])


# -- head-mix alternatives ---------------------------------------------------------------------------


def _mix_einsum(x, w):
    return torch.einsum("bhts,oh->bots", x, w[0])


def _mix_linear(x, w):
    return F.linear(x.permute(0, 2, 3, 1), w[0]).permute(0, 3, 1, 2)  # linear over a transposed tensor


def _mix_axpy(x, w):
    return torch.stack([sum(w[0, o, i] * x[:, i] for i in range(x.shape[1])) for o in range(x.shape[1])], 1)


def _mix_conv_cl(x, w):
    return head_mix(x, w)


def _mix_matmul(x, w):
    return mix_heads(x, w)


HEAD_MIXES = {
    "einsum": _mix_einsum,
    "linear (transposed)": _mix_linear,
    "per-head axpy": _mix_axpy,
    "1x1 grouped conv, channels-last": _mix_conv_cl,
    "matmul over the head axis (as in mta_attention)": _mix_matmul,
}


# -- measurement ----------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_round_robin(fns: dict[str, Callable[[], None]], repeats: int, device: str = "cpu") -> dict[str, float]:
    for fn in fns.values():  # warm-up
        fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def saved_bytes(fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the unique storages autograd saves for the backward of fn()."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        storages[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def inputs(shape: Shape, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    b, h, s, d = shape.batch, shape.heads, shape.seq, shape.head_dim
    c_q, c_k = shape.kernel

    def leaf(*size, scale=1.0):
        return (torch.randn(*size, generator=g) * scale).to(device, dtype).requires_grad_()

    q, k, v = (leaf(b, h, s, d) for _ in range(3))
    pre, post = leaf(h, c_q, c_k, scale=0.2), leaf(h, c_q, c_k, scale=0.2)
    pre_mix, post_mix = leaf(1, h, h, scale=0.5), leaf(1, h, h, scale=0.5)
    return q, k, v, pre, post, pre_mix, post_mix


def _pure_torch(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """fn on the op's pure-torch path (the reference, and the GPU path), for a side-by-side time with the kernel."""

    def run():
        with kernel.path("torch"):
            return fn()

    return run


def machine() -> dict:
    """What the ratios were measured on: they differ between CPUs (an Intel Xeon and an AMD EPYC VM, say)."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "mta_op_cpu": kernel.why_not() or "fused CPU kernel",
    }


def bench_shape(shape: Shape, repeats: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    q, k, v, pre, post, pre_mix, post_mix = inputs(shape, device=device, dtype=dtype)
    leaves = (q, k, v, pre, post, pre_mix, post_mix)
    full = dict(pre_kernel=pre, post_kernel=post, pre_head_mix=pre_mix, post_head_mix=post_mix)
    mixes = dict(pre_head_mix=pre_mix, post_head_mix=post_mix)
    variants = {
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "reference": lambda: reference_mta(q, k, v, pre, post, pre_mix, post_mix),
        "materialized": lambda: materialized_mta_attention(q, k, v, **full),
        "mta_attention": lambda: mta_attention(q, k, v, **full),
        "mta_attention, pure torch": _pure_torch(lambda: mta_attention(q, k, v, **full)),
        "talking heads, materialized": lambda: materialized_mta_attention(q, k, v, **mixes),
        "talking heads, mta_attention": lambda: mta_attention(q, k, v, **mixes),
    }

    def forward(fn):
        def run():
            with torch.no_grad():
                fn()

        return run

    def forward_backward(fn):
        def run():
            for leaf in leaves:
                leaf.grad = None
            fn().sum().backward()

        return run

    fwd = _time_round_robin({n: forward(f) for n, f in variants.items()}, repeats, device)
    fwd_bwd = _time_round_robin({n: forward_backward(f) for n, f in variants.items()}, repeats, device)
    saved = {n: saved_bytes(f) for n, f in variants.items()}
    one_map = shape.batch * shape.heads * shape.seq**2 * 4
    rows = [
        {
            "variant": n,
            "forward_ms": fwd[n],
            "forward_backward_ms": fwd_bwd[n],
            "saved_mib": saved[n] / 2**20,
            "saved_maps": saved[n] / one_map,
            "fwd_bwd_vs_reference": fwd_bwd["reference"] / fwd_bwd[n],
            "fwd_bwd_vs_sdpa": fwd_bwd[n] / fwd_bwd["sdpa"],
        }
        for n in variants
    ]
    return {"shape": asdict(shape), "rows": rows}


def bench_head_mix(shape: Shape, repeats: int, device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    """Forward+backward of a full H x H head mix over a (B, H, S, S) map, each alternative, on `device`."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape.batch, shape.heads, shape.seq, shape.seq, generator=g).to(device, dtype)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x = x.requires_grad_()
    w = (torch.randn(1, shape.heads, shape.heads, generator=g) * 0.5).to(device, dtype).requires_grad_()

    def fwd_bwd(fn, inp):
        def run():
            inp.grad, w.grad = None, None
            fn(inp, w).sum().backward()

        return run

    fns = {name: fwd_bwd(fn, x) for name, fn in HEAD_MIXES.items()}
    # the op's own input after a conv is already channels-last; measure that case too
    fns["1x1 grouped conv, channels-last input"] = fwd_bwd(_mix_conv_cl, x_cl)
    times = _time_round_robin(fns, repeats, device)
    base = times["einsum"]
    return {
        "shape": asdict(shape),
        "device": device,
        "rows": [{"variant": n, "forward_backward_ms": t, "vs_einsum": base / t} for n, t in times.items()],
    }


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def run(repeats: int = 7, shapes: tuple[Shape, ...] = SHAPES, device: str = "cpu", dtype: str = "fp32") -> dict:
    torch.manual_seed(0)
    return {
        "torch": torch.__version__,
        **machine(),
        "device": device,
        "dtype": dtype,
        "repeats": repeats,
        "ops": [bench_shape(s, repeats, device, DTYPES[dtype]) for s in shapes],
        "head_mix": bench_head_mix(shapes[0], repeats, device, DTYPES[dtype]),
    }


# -- longest context within a memory limit -----------------------------------------------------------
