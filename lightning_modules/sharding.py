"""What evaluation code needs to know about sharded (FSDP) training: whether it is on, and a context that gathers
the whole parameters for code that calls the model outside Lightning's wrapper."""

from __future__ import annotations

import contextlib


def is_sharded(trainer) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


def full_parameters(trainer):
    """A context in which the model holds its whole parameters on every rank (FSDP gathers its shards; a collective,
    so every rank enters it); a no-op otherwise. For evaluation code that calls the model outside Lightning."""
    if not is_sharded(trainer):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel

    return FullyShardedDataParallel.summon_full_params(trainer.strategy.model, writeback=False)
