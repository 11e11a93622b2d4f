"""What one training step of a trial needs on each device, estimated without the device: peak memory and FLOPs.

    estimate(config, device_type="cuda") -> Footprint

The model is built on the meta device and one forward + backward runs on fake tensors (`FakeTensorMode`: shapes and
dtypes, no data, no memory), under the trial's precision (bf16 autocast for bf16-mixed) and the op's tiling for
the target device. A dispatch mode follows every storage the step allocates and frees, so the peak counts what
really coexists: saved activations at the configured micro-batch, the op's transient maps, autocast's bf16 weight
copies, the gradients as the backward writes them and the loss. Around that step the resting state is added:
fp32 parameters and AdamW's two fp32 moments (the gradients are freed between steps), DDP's gradient buckets, or
under FSDP the shards of all three plus one block's gathered bf16 parameters (prefetch: two). With micro-batches the
later passes also hold the accumulated fp32 gradients; under FSDP the gradients are sharded (`pass_adjustment`).

What it does not see: the CUDA caching allocator's fragmentation and the CUDA context (about 0.5-1 GiB per
process), NCCL buffers, and kernels' own workspaces (cuBLAS, flash attention). `mta-ablate plan` keeps a margin
for them (`RESERVE_GIB`); `mta-ablate bench gpu-check` prints the estimate beside the measured peak.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GIB = 2**30
RESERVE_GIB = 4.0
"""Room `plan` leaves on every device for what the estimate does not see (CUDA context, allocator, workspaces)."""


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages created under it that are still alive, and their peak (views share a storage)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage._cdata
                if key not in self._seen:
                    self._seen.add(key)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._freed, key, storage.nbytes())
        return out


class ComputeOps(TorchDispatchMode):
    """Counts the aten ops that launch work (views and metadata ops excluded): on a GPU, about one kernel each."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func not in (torch.ops.aten.detach.default, torch.ops.aten.lift_fresh.default):
            self.count += 1
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class Footprint:
    """One device's share of one training step, in bytes (FLOPs for the whole step over all devices)."""

    states: int
    """Resting state: parameters, optimizer moments, DDP buckets (the device's shard under FSDP)."""
    step_peak: int
    """Peak of what one forward + backward pass allocates on top: activations, transient maps, gradients."""
    activations: int
    """Of the step's peak, what is alive when the forward ends (saved activations and the loss)."""
    flops_per_step: int
    micro_batch: int
    passes: int
    checkpointing: bool

    @property
    def peak(self) -> int:
        return self.states + self.step_peak


def step_peak(model_config, rows: int, seq_len: int, precision: str, device_type: str, checkpointing: bool):
    """(peak, alive after the forward) in bytes of one forward + backward pass of `rows` sequences, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from mta_ablate.attention.op import tiled_as
    from mta_ablate.model import TransformerLM, lm_loss

    with torch.device("meta"):
        model = TransformerLM(model_config)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model.to_empty(device="cpu")
        model.checkpoint_blocks = checkpointing
        tokens = torch.zeros(rows, seq_len + 1, dtype=torch.long)
        with tiled_as(device_type), LiveBytes() as live:
            with autocast:
                loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
            after_forward = live.live
            loss.backward()
        return live.peak, after_forward


def resting_bytes(n_params: int, block_params: int, strategy: str, world_size: int) -> int:
    """fp32 parameters and AdamW's two moments; DDP adds its gradient buckets (one more fp32 copy); FSDP keeps a
    1/world shard of all of it plus two blocks' bf16 parameters gathered at a time."""
    if world_size > 1 and strategy == "fsdp":
        return 12 * n_params // world_size + 2 * 2 * block_params
    return 12 * n_params + (4 * n_params if world_size > 1 else 0)


def pass_adjustment(n_params: int, train, precision: str) -> int:
    """Bytes to add to the one pass measured on a whole model. Gradient accumulation: passes 2.. run while the fp32
    gradients of the earlier ones are alive (counted whole: an upper bound). FSDP: each rank keeps only its shard
    of the gradients, and with bf16 parameters autocast keeps no bf16 copy of the weights."""
    extra = 4 * n_params if train.accumulation > 1 else 0
    if train.world_size > 1 and train.strategy == "fsdp":
        extra -= 4 * n_params * (train.world_size - 1) // train.world_size
        extra -= 2 * n_params if precision == "bf16-mixed" else 0
    return extra


def estimate(config, seq_len: int, device_type: str = "cuda", precision: str | None = None) -> Footprint:
    """The footprint of one training step of `config` (an `ExperimentConfig`) on `device_type` at `seq_len`."""
    from lightning_modules.lm_module import step_flops
    from mta_ablate.model import TransformerLM

    train = config.train
    if precision is None:  # as `resolved_device` would on that device
        auto = "bf16-mixed" if device_type == "cuda" else "32-true"
        precision = train.precision if train.precision != "auto" else auto
    rows = train.rows_per_pass
    with torch.device("meta"):
        meta = TransformerLM(config.model)
    n_params = sum(p.numel() for p in meta.parameters())
    block = max(sum(p.numel() for p in layer.parameters()) for layer in meta.layers)
    peak, alive = step_peak(config.model, rows, seq_len, precision, device_type, train.activation_checkpointing)
    peak += pass_adjustment(n_params, train, precision)
    flops = step_flops(config.model, rows, seq_len, device_type) * train.accumulation * train.world_size
    return Footprint(
        states=resting_bytes(n_params, block, train.strategy, train.world_size),
        step_peak=peak,
        activations=alive,
        flops_per_step=flops,
        micro_batch=rows,
        passes=train.accumulation,
        checkpointing=train.activation_checkpointing,
    )


def fitting(config, seq_len: int, limit_bytes: int, device_type: str = "cuda"):
    """The largest micro-batch (then with activation checkpointing) at which `config` fits in `limit_bytes`, as
    (train config, footprint), or None when nothing fits even at micro-batch 1 with checkpointing."""
    train = config.train
    share, rows = train.batch_size // train.world_size, train.rows_per_pass
    divisors = [m for m in range(share, 0, -1) if share % m == 0]
    options = [(m, False) for m in divisors if m < rows and not train.activation_checkpointing]
    options += [(m, True) for m in divisors if m < rows or not train.activation_checkpointing]
    for micro, checkpointing in options:  # fewest passes first; checkpointing only when micro-batches do not do
        tried = replace(train, micro_batch=micro, activation_checkpointing=checkpointing)
        fp = estimate(replace(config, train=tried), seq_len, device_type)
        if fp.peak <= limit_bytes:
            return tried, fp
    return None
