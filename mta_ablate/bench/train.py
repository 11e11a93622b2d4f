"""Training benchmark: step time, tokens/s and activation memory of attention variants, and the cost of Lightning.

    mta-ablate bench train [--steps 12] [--repeats 3] [--json]

1. Variants (`baseline`, `mta_toy`, `mta_paper`) on the `tiny` model, trained through the same Lightning path that
   `mta-ablate train` uses, on the same pre-generated batches; per-step wall time from the batch-start/end hooks.
2. Lightning vs a bare torch loop (same model init, same batches, same AdamW + schedule + clipping), per step.
Runs are interleaved round-robin and the first `warmup` steps of each run are dropped; medians are reported.
"Activation memory" is what autograd saves for one training forward (unique storages), which, unlike the process RSS,
can be attributed to one variant inside a single process.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict

import torch

from mta_ablate.attention import preset
from mta_ablate.bench.attention import saved_bytes
from mta_ablate.config.schema import TrainConfig
from mta_ablate.model import ModelConfig, TransformerLM, lm_loss, model_preset

VARIANTS = ("baseline", "talking_heads", "mta_toy", "mta_paper")


def _batches(vocab: int, batch: int, seq: int, n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        seq_tokens = torch.randint(0, vocab, (batch, seq + 1), generator=g)
        weight = torch.ones(batch, seq)
        out.append(
            {
                "tokens": seq_tokens[:, :-1],
                "targets": seq_tokens[:, 1:],
                "loss_weight": weight,
                "loss_mask": weight > 0,
                "answer_mask": torch.zeros(batch, seq, dtype=torch.bool),
            }
        )
    return out


def _model_config(variant: str, vocab: int, seq: int) -> ModelConfig:
    shape = {**model_preset("tiny"), "max_seq_len": seq}
    return ModelConfig(vocab_size=vocab, attention=preset(variant), **shape)


def _train_config(steps: int) -> TrainConfig:
    return TrainConfig(
        max_steps=steps,
        batch_size=1,
        lr=1e-3,
        warmup_steps=2,
        val_every=10**6,
        log_every=10**6,
        accelerator="cpu",
        precision="32-true",
        checkpoint=False,
        progress="none",
    )


def lightning_step_times(model_config: ModelConfig, batches: list, seed: int = 0) -> list[float]:
    """Seconds per training step through LMModule + Trainer (data fetch, hooks, logging, clipping included)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lightning_modules.callbacks import trainer_kwargs
    from lightning_modules.lm_module import LMModule

    class StepTimer(Callback):
        """Time from one batch start to the next: the whole loop iteration (fetch, hooks, logging, step)."""

        def __init__(self):
            self.times: list[float] = []
            self._start = None

        def on_train_batch_start(self, *args):
            now = time.perf_counter()
            if self._start is not None:
                self.times.append(now - self._start)
            self._start = now

        def on_train_end(self, *args):
            self.times.append(time.perf_counter() - self._start)

    torch.manual_seed(seed)
    train = _train_config(len(batches))
    module = LMModule(model_config, train)
    module.setup = lambda stage: None  # FLOP counting is not part of a training step
    timer = StepTimer()
    kwargs = {**trainer_kwargs(train), "limit_val_batches": 0, "val_check_interval": None}
    trainer = L.Trainer(logger=False, callbacks=[timer], **kwargs)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    return timer.times


def bare_step_times(model_config: ModelConfig, batches: list, seed: int = 0) -> list[float]:
    """Seconds per step of a plain torch loop doing the same work as LMModule."""
    from lightning_modules.lm_module import LMModule

    torch.manual_seed(seed)
    train = _train_config(len(batches))
    module = LMModule(model_config, train)  # same init and the same optimizer/schedule construction
    model = module.model
    optim = module.configure_optimizers()
    optimizer, scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    model.train()
    times = []
    start = time.perf_counter()
    for batch in batches:
        loss = lm_loss(model(batch["tokens"]), batch["targets"], batch["loss_weight"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        now = time.perf_counter()
        times.append(now - start)
        start = now
    return times


def _median_ms(runs: list[list[float]], warmup: int) -> float:
    return statistics.median(t for run in runs for t in run[warmup:]) * 1e3


def run(steps: int = 12, repeats: int = 3, batch: int = 16, seq: int = 128, warmup: int = 2) -> dict:
    vocab = 259  # the byte tokenizer's vocabulary
    batches = _batches(vocab, batch, seq, steps)
    configs = {v: _model_config(v, vocab, seq) for v in VARIANTS}
    lightning_runs: dict[str, list] = {v: [] for v in VARIANTS}
    bare_runs: list = []
    for _ in range(repeats):  # round-robin, so slow phases of a shared machine hit every variant alike
        for v in VARIANTS:
            lightning_runs[v].append(lightning_step_times(configs[v], batches))
        bare_runs.append(bare_step_times(configs["baseline"], batches))

    rows = []
    base_ms = _median_ms(lightning_runs["baseline"], warmup)
    for v in VARIANTS:
        model = TransformerLM(configs[v])
        tokens = batches[0]["tokens"]
        saved = saved_bytes(lambda m=model, t=tokens: lm_loss(m(t), batches[0]["targets"]))  # noqa: B023
        ms = _median_ms(lightning_runs[v], warmup)
        counts = model.count_params()
        rows.append(
            {
                "variant": v,
                "step_ms": ms,
                "tokens_per_s": batch * seq / (ms / 1e3),
                "step_time_vs_baseline": ms / base_ms,
                "activation_mib": saved / 2**20,
                "params": counts["total"],
                "mta_params": counts["mta"],
            }
        )
    bare_ms = _median_ms(bare_runs, warmup)
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": {**asdict(configs["baseline"]), "attention": None},
        "batch": batch,
        "seq": seq,
        "steps": steps,
        "repeats": repeats,
        "variants": rows,
        "lightning_overhead": {
            "lightning_step_ms": base_ms,
            "bare_step_ms": bare_ms,
            "lightning_vs_bare": base_ms / bare_ms,
        },
    }
