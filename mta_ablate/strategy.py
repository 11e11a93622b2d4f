"""The Lightning side of a multi-rank trial: `TrialEnvironment` (fixed ranks from a `ranks.Plan`, nothing launched),
`strategy` (DDP or FSDP with the trial's timeout) and `whole_model` (the module rank 0 evaluates after training)."""

from __future__ import annotations

import warnings
from datetime import timedelta

import torch
from lightning.fabric.plugins.environments import ClusterEnvironment
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy
from torch.distributed.fsdp import MixedPrecision

from lightning_modules.callbacks import resolved_device
from lightning_modules.lm_module import LMModule
from lightning_modules.sharding import is_sharded
from mta_ablate.model.transformer import Block
from mta_ablate.ranks import Plan


class TrialEnvironment(ClusterEnvironment):
    """Lightning's view of a trial's ranks: fixed by `Plan`, processes already started (by `child_ranks` or srun)."""

    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        return self.plan.address

    @property
    def main_port(self) -> int:
        return self.plan.port

    @staticmethod
    def detect() -> bool:
        return False

    def world_size(self) -> int:
        return self.plan.world_size

    def set_world_size(self, size: int) -> None:
        if size != self.plan.world_size:
            raise RuntimeError(f"Lightning wants {size} ranks; the trial has {self.plan.world_size}")

    def global_rank(self) -> int:
        return self.plan.rank

    def set_global_rank(self, rank: int) -> None:
        pass

    def local_rank(self) -> int:
        return self.plan.local_rank

    def node_rank(self) -> int:
        return self.plan.rank // self.plan.devices


def strategy(train, plan: Plan):
    """The Lightning strategy of a multi-rank trial: DDP (auto) or FSDP, gloo on CPU and NCCL on CUDA, with the
    trial's collective timeout."""
    warnings.filterwarnings("ignore", message=r".*sync_dist=True.*epoch level in distributed")  # whole per rank
    env = TrialEnvironment(plan)
    timeout = timedelta(seconds=train.rank_timeout_s)
    if train.strategy == "fsdp":
        return FSDPStrategy(  # each transformer block is one shard unit; checkpoints are whole (1 device reads them)
            cluster_environment=env,
            timeout=timeout,
            state_dict_type="full",
            auto_wrap_policy={Block},
            mixed_precision=fsdp_mixed_precision(train),
        )
    return DDPStrategy(cluster_environment=env, timeout=timeout)


def fsdp_mixed_precision(train):
    """FSDP's mixed precision for a bf16-mixed trial: bf16 compute, fp32 gradient reduction and fp32 buffers (the
    RoPE tables), so the averaged gradient is the one-device gradient up to the order of fp32 sums. None (fp32
    throughout) for 32-true. Lightning's default would reduce gradients and keep buffers in bf16."""
    if resolved_device(train)[1] != "bf16-mixed":
        return None
    return MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.float32)


def whole_model(trainer, module, config):
    """After training, the module rank 0 evaluates: `module` itself, or under FSDP a fresh one loaded with the full
    state dict that every rank helps gather here (so call it on every rank, before the children exit)."""
    if not is_sharded(trainer):
        return module
    state = trainer.strategy.lightning_module_state_dict()  # whole on rank 0, empty elsewhere
    if not trainer.is_global_zero:
        return module
    whole = LMModule(config.model, config.train, module.task, seed=config.seed)
    whole.load_state_dict(state)
    whole.flops_per_batch = getattr(module, "flops_per_batch", None)
    return whole.to(trainer.strategy.root_device)
