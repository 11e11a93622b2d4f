"""The op's tiling by device: CPU blocks stay cache-sized; accelerator blocks (CUDA, and the meta device that stands
for one here) are large, so one paper MTA layer dispatches few kernels and recomputes little halo. Counted on the
meta device with a TorchDispatchMode: nothing is allocated, no GPU is needed."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from mta_ablate.attention import op
from mta_ablate.attention.block import blocks
from mta_ablate.attention.op import block_rows, mta_attention
from mta_ablate.footprint import ComputeOps

PAPER_LAYER = dict(b=1, h=16, s=2048, d=64)  # the paper's 300m layer at 2K context
KERNEL = (6, 11)


def _layer_inputs(device, b, h, s, d, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=1.0):
        t = (torch.randn(*shape, generator=g) * scale) if device == "cpu" else torch.empty(*shape)
        return t.to(device=device, dtype=dtype).requires_grad_()

    q, k, v = (leaf(b, h, s, d) for _ in range(3))
    pre, post = leaf(h, *KERNEL, scale=0.1), leaf(h, *KERNEL, scale=0.1)
    pre_mix, post_mix = leaf(1, h, h, scale=0.1), leaf(1, h, h, scale=0.1)
    return q, k, v, pre, post, pre_mix, post_mix


def _fwd_bwd(q, k, v, pre, post, pre_mix, post_mix):
    out = mta_attention(q, k, v, pre_kernel=pre, post_kernel=post, pre_head_mix=pre_mix, post_head_mix=post_mix)
    out.sum().backward()


def test_a_paper_layer_on_an_accelerator_dispatches_under_1500_ops_and_recomputes_under_10pct_halo():
    b, h, s, d = PAPER_LAYER.values()
    tensors = _layer_inputs("meta", b, h, s, d)
    with ComputeOps() as ops:
        _fwd_bwd(*tensors)
    assert ops.count <= 1500, f"{ops.count} aten compute ops for one layer forward+backward"
    rows = block_rows(b, h, s, "meta")
    assert rows == block_rows(b, h, s, "cuda")
    pre, post = tensors[3], tensors[4]
    computed = sum(blk.i1 - blk.r0 for blk in blocks(s, rows, pre, post, "cpu"))
    assert computed / s - 1 <= 0.10, f"halo recomputation {computed / s - 1:.1%} of the logits rows"
    with ComputeOps() as cpu_ops, op.tiled_as("cpu"):  # the same layer tiled for the CPU: many small blocks
        _fwd_bwd(*_layer_inputs("meta", b, h, s, d))
    assert cpu_ops.count > 3 * ops.count
    assert block_rows(b, h, s, "cpu") == 16  # the CPU tiling is unchanged


def test_tiling_for_another_device_does_not_change_the_result():
    tensors = _layer_inputs("cpu", 2, 4, 96, 8)
    out_cpu = mta_attention(*tensors[:3], pre_kernel=tensors[3], post_kernel=tensors[4], pre_head_mix=tensors[5])
    with op.tiled_as("cuda"):
        out_acc = mta_attention(*tensors[:3], pre_kernel=tensors[3], post_kernel=tensors[4], pre_head_mix=tensors[5])
    torch.testing.assert_close(out_acc, out_cpu, rtol=1e-5, atol=1e-6)


class MatmulDtypes(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default):
            self.dtypes.add(args[0].dtype)
        return func(*args, **(kwargs or {}))


def test_the_backward_recomputes_the_maps_under_the_forwards_autocast():
    q, k, v, pre, post, pre_mix, post_mix = _layer_inputs("cpu", 2, 4, 640, 16)  # maps recomputed, not kept
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mta_attention(q, k, v, pre_kernel=pre, post_kernel=post, pre_head_mix=pre_mix, post_head_mix=post_mix)
    with MatmulDtypes() as seen:  # outside autocast, as Lightning's backward runs
        out.float().sum().backward()
    assert torch.bfloat16 in seen.dtypes, f"backward matmuls ran in {seen.dtypes}, not the forward's bf16"
    assert q.grad.dtype == torch.float32 and torch.isfinite(q.grad).all()
