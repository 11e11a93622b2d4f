"""What evaluation code needs to know about sharded (FSDP) training: whether it is on, and how to call the model.

Under FSDP the inner `TransformerLM` holds flat, sharded parameters; it may only run forward through the sharded
root (the wrapped LightningModule), which gathers each block's shards as it goes. `forward_model` gives evaluation
code a model it can call on every rank during training; no forward ever runs inside `summon_full_params`.
"""

from __future__ import annotations

from torch import nn


def is_sharded(trainer) -> bool:
    from lightning.pytorch.strategies import FSDPStrategy

    return isinstance(trainer.strategy, FSDPStrategy)


class ShardedForward(nn.Module):
    """A sharded root seen as the language model: `forward(tokens)` runs through FSDP's root (a collective: every
    rank calls it the same number of times), `config` is the inner model's. Only for forwards under no_grad."""

    def __init__(self, root: nn.Module, config):
        super().__init__()
        self.root = root
        self.config = config

    def forward(self, tokens):
        return self.root(tokens)


def forward_model(trainer, model: nn.Module) -> nn.Module:
    """`model` itself, or under FSDP a `ShardedForward` over the strategy's root: what the task's own metrics call
    during training."""
    if not is_sharded(trainer):
        return model
    return ShardedForward(trainer.strategy.model, model.config)
