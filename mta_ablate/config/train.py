"""`TrainConfig`: optimisation, schedule, validation cadence and devices of a trial, each field checked."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from mta_ablate.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Optimisation, schedule, validation cadence and device."""

    max_steps: int = 300
    """Optimizer steps."""
    batch_size: int = 32
    """Sequences per step (the global batch, over all devices)."""
    micro_batch: int = 0
    """Sequences per forward/backward pass on each device; 0: the device's whole share (batch_size / ranks). Smaller
    values accumulate gradients over batch_size / ranks / micro_batch passes per step: the same global batch, the same
    loss normalisation and so the same gradient as one pass (up to the order of floating-point sums; with attention
    dropout the masks are drawn per pass, so they differ)."""
    activation_checkpointing: bool = False
    """Recompute each transformer block's activations in the backward instead of keeping them (per block):
    saved activations shrink to one tensor per block, for about a third more compute."""
    deterministic: bool = False
    """Use torch's deterministic algorithms where they exist (CUDA: SDPA's backward, cuDNN), for GPU runs that must
    repeat; slower. CPU runs repeat bitwise without it."""
    lr: float = 2e-3
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of the peak (cosine and linear decay)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to the peak."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warm-up (the paper: linear; its toy task: constant)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas (the paper: 0.9, 0.98)."""
    eps: float = 1e-8
    """AdamW epsilon."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    decay: Literal["all", "matrices"] = "matrices"
    """Which parameters decay. all: every parameter, as the paper (pulls MTA kernels toward 0, not identity);
    matrices: projection and embedding matrices only (no norms, gates, MTA kernels or head mixes)."""
    grad_clip: float = 1.0
    """Gradient-norm clipping; 0 disables."""
    val_every: int = 100
    """Validate (and checkpoint) every this many steps."""
    val_batches: int = 4
    """Batches per validation (fixed, the same for every model)."""
    eval_batches: int = 16
    """Batches of the final evaluation."""
    val_samples: int = 128
    """Samples (lm: windows per corpus) of the task's own metrics at every validation."""
    eval_samples: int = 512
    """Samples (lm: windows per corpus; needle: per grid cell) of the final evaluation."""
    log_every: int = 10
    """Log training metrics every this many steps."""
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when present, else CPU."""
    precision: Literal["auto", "32-true", "bf16-mixed"] = "auto"
    """auto: bf16-mixed on CUDA, 32-true on CPU."""
    devices: int = 1
    """Devices (processes) per node that one trial trains on. The global batch stays `batch_size`: each of the
    devices x num_nodes ranks trains on its equal share of the rows of every step's batch, and the loss is normalised
    by the whole batch, so the gradient is the one-device gradient (same data, same seed; see docs/scale-out.md for
    the tolerance). On CPU each rank is a gloo process with `threads` threads."""
    num_nodes: int = 1
    """Nodes one trial spans (each with `devices`). More than one needs ranks started by the cluster (`srun`)."""
    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    """How the ranks share a trial: ddp (a full copy per rank, gradients averaged), fsdp (parameters, gradients and
    optimizer state sharded across ranks); auto: ddp. Ignored on one device."""
    rank_timeout_s: int = 300
    """A collective (gradient average, checkpoint, pruning decision) that waits this long for a rank fails the trial;
    a rank that dies fails it at the next collective."""
    threads: int = 0
    """CPU threads for torch in this trial; 0 keeps torch's default (or a worker's --threads). The CPU recipes fix it
    to 1: floating-point sums depend on the thread count, so a fixed count keeps a trial's numbers the same whichever
    worker, host or worker count runs it."""
    checkpoint: bool = True
    """Write a checkpoint at every validation (needed for resume)."""
    resume: bool = False
    """Continue from the last checkpoint of the same run name, in the same MLflow run."""
    progress: Literal["auto", "rich", "none"] = "auto"
    """Progress bar: auto shows Lightning's RichProgressBar on a terminal only."""

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "batch_size",
            "val_every",
            "val_batches",
            "eval_batches",
            "val_samples",
            "eval_samples",
            "log_every",
            "devices",
            "num_nodes",
            "rank_timeout_s",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)}: expected an integer >= 1")
        for name in ("warmup_steps", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}={getattr(self, name)}: expected an integer >= 0")
        if self.micro_batch < 0:
            raise ConfigError(f"train.micro_batch={self.micro_batch}: expected an integer >= 0 (0: no accumulation)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr={self.lr}: expected a positive finite number")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio={self.min_lr_ratio}: expected a number in [0, 1]")
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"train.betas={list(self.betas)}: expected two numbers in [0, 1)")
        for name in ("weight_decay", "grad_clip", "eps"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"train.{name}={getattr(self, name)}: expected a finite number >= 0")
        ranks = self.devices * self.num_nodes
        if self.batch_size % ranks:
            raise ConfigError(
                f"train.batch_size={self.batch_size}: not divisible by train.devices x train.num_nodes = {ranks} "
                f"(every rank trains on an equal share of the global batch); choose a multiple of {ranks}"
            )
        share = self.batch_size // ranks
        if self.micro_batch and share % self.micro_batch:
            allowed = ", ".join(str(d) for d in range(1, share + 1) if share % d == 0)
            raise ConfigError(
                f"train.micro_batch={self.micro_batch}: does not divide the {share} sequences each of the {ranks} "
                f"rank(s) trains on per step (train.batch_size={self.batch_size}); allowed: {allowed}"
            )

    @property
    def world_size(self) -> int:
        """Ranks (processes) one trial trains on."""
        return self.devices * self.num_nodes

    @property
    def rows_per_pass(self) -> int:
        """Sequences in one forward/backward pass on one device."""
        return self.micro_batch or self.batch_size // self.world_size

    @property
    def accumulation(self) -> int:
        """Forward/backward passes per optimizer step on each device (1 without `micro_batch`)."""
        return self.batch_size // self.world_size // self.rows_per_pass
