"""The Lightning training path against a bare torch transcription of it: same weights, same batches, same losses.

Catches drift in what a trial's training step does (schedule off by one, loss weighting, clipping, precision,
evaluation mode left on, the per-step seeding), for the baseline and for an MTA arm."""

from dataclasses import replace

import pytest
import torch

from mta_ablate.attention import preset
from mta_ablate.bench.train import bare_twin_losses, lightning_losses
from mta_ablate.config.schema import TrainConfig
from mta_ablate.data.tasks import build_task
from mta_ablate.model import ModelConfig, TransformerLM, model_preset

STEPS = 100


@pytest.mark.parametrize("attention", ["baseline", "mta_toy"])
def test_lightning_and_the_bare_twin_give_the_same_loss_trajectory(attention):
    task = build_task("find_block", target="all")
    batches = [task.batch(32, seed=1000 + i) for i in range(STEPS)]
    config = ModelConfig(vocab_size=task.vocab_size, attention=preset(attention), **model_preset("toy"))
    train = TrainConfig(  # the cpu recipe's optimiser and schedule, shortened
        max_steps=STEPS,
        batch_size=32,
        lr=2e-3,
        warmup_steps=25,
        schedule="cosine",
        min_lr_ratio=0.1,
        grad_clip=1.0,
        accelerator="cpu",
        precision="32-true",
        checkpoint=False,
        progress="none",
    )
    torch.set_num_threads(1)
    lightning, initial = lightning_losses(config, train, batches, seed=3)
    model = TransformerLM(config, seed=3)
    for name, value in model.state_dict().items():
        assert torch.equal(value, initial[name]), name
    bare = bare_twin_losses(model, train, batches, seed=3)
    assert len(lightning) == len(bare) == STEPS
    assert lightning[-1] < lightning[0] - 0.3  # it learned something, so the comparison is not of two flat lines
    torch.testing.assert_close(torch.tensor(lightning), torch.tensor(bare), rtol=1e-5, atol=1e-5)
    # the comparison can fail: the schedule one step late is visible
    late = bare_twin_losses(TransformerLM(config, seed=3), replace(train, warmup_steps=26), batches[:40], seed=3)
    assert max(abs(a - b) for a, b in zip(late, lightning[:40], strict=True)) > 1e-4
