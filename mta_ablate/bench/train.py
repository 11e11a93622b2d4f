"""Training benchmark: step time, tokens/s and activation memory of attention variants, and the cost of Lightning.

    mta-ablate bench train [--steps 12] [--repeats 3] [--json]

1. Variants (`baseline`, `talking_heads`, `mta_toy`, `mta_paper`, and `mta_paper` on the op's pure-torch path) at
   two shapes: the `tiny` model (B16 x 128) and the needle ladder's model (`toy` with 4 layers and 4 heads, B16 x
   256), trained through the same Lightning path that `mta-ablate train` uses, on the same pre-generated batches;
   per-step wall time from the batch-start/end hooks.
2. The same variants in bare torch loops that take turns one step at a time (`paired_step_times`): the step-time
   ratio to the baseline is the median over rounds of the ratio within a round (`paired_vs_baseline`), which a shared
   machine's slow phases move far less than the ratio of medians from runs seconds apart.
3. Lightning vs a bare torch loop (same model init, same batches, same AdamW + schedule + clipping), per step, at
   the first shape.
Runs are interleaved round-robin and the first `warmup` steps of each run are dropped; medians are reported.
"Activation memory" is what autograd saves for one training forward (unique storages), which, unlike the process RSS,
can be attributed to one variant inside a single process.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from mta_ablate.attention import kernel, preset
from mta_ablate.bench.attention import machine, saved_bytes
from mta_ablate.config.schema import TrainConfig
from mta_ablate.model import ModelConfig, TransformerLM, lm_loss, model_preset

VARIANTS = ("baseline", "talking_heads", "mta_toy", "mta_paper")
PURE_TORCH = "mta_paper, pure torch"  # mta_paper with the op on its pure-torch path: what the fused kernel saves


@dataclass(frozen=True)
class TrainShape:
    name: str
    model: str  # a model preset
    changes: tuple = ()  # (field, value) pairs over the preset
    batch: int = 16
    seq: int = 128


SHAPES = (
    TrainShape("tiny", "tiny"),
    TrainShape("needle ladder", "toy", (("n_layers", 4), ("n_heads", 4)), 16, 256),
)


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


def _model_config(variant: str, vocab: int, shape: TrainShape) -> ModelConfig:
    fields = {**model_preset(shape.model), **dict(shape.changes), "max_seq_len": shape.seq}
    return ModelConfig(vocab_size=vocab, attention=preset(variant.split(",")[0]), **fields)


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


class _BareLoop:
    """A plain torch loop doing the same work as LMModule's training step: forward, loss, backward, clipping, AdamW
    and its schedule (the same init and optimizer construction, through LMModule)."""

    def __init__(self, model_config: ModelConfig, steps: int, seed: int = 0):
        from lightning_modules.lm_module import LMModule

        torch.manual_seed(seed)
        self.train = _train_config(steps)
        module = LMModule(model_config, self.train)
        self.model = module.model
        optim = module.configure_optimizers()
        self.optimizer, self.scheduler = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
        self.model.train()

    def step(self, batch: dict) -> float:
        """One training step; returns its wall time in seconds."""
        start = time.perf_counter()
        loss = lm_loss(self.model(batch["tokens"]), batch["targets"], batch["loss_weight"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def bare_step_times(model_config: ModelConfig, batches: list, seed: int = 0) -> list[float]:
    """Seconds per step of a plain torch loop doing the same work as LMModule."""
    loop = _BareLoop(model_config, len(batches), seed)
    return [loop.step(batch) for batch in batches]


def paired_step_times(configs: dict[str, ModelConfig], batches: list, seed: int = 0) -> dict[str, list[float]]:
    """Seconds per step of each variant's bare loop, the variants taking turns one step at a time on the same batch:
    step i of every variant runs within the same second or so, so a slow phase of a shared machine (where a step's
    time moved by up to 40% between runs a few seconds apart) hits the variants of a round alike. `PURE_TORCH` runs
    its op on the pure-torch path."""
    loops = {v: _BareLoop(c, len(batches), seed) for v, c in configs.items()}
    times: dict[str, list[float]] = {v: [] for v in configs}
    for batch in batches:
        for v, loop in loops.items():
            with kernel.path("torch" if v == PURE_TORCH else "fused"):
                times[v].append(loop.step(batch))
    return times


def paired_ratio(times: list[float], base: list[float], warmup: int) -> float:
    """Median over rounds of a variant's step time over the baseline's in the same round."""
    return statistics.median(t / b for t, b in zip(times[warmup:], base[warmup:], strict=True))


# -- the bare twin: the training path transcribed in plain torch, to catch drift in the Lightning path -----------


def twin_lr_factor(step: int, warmup: int, max_steps: int, schedule: str, min_ratio: float) -> float:
    """The learning-rate multiplier, written out again: linear warm-up to the peak over `warmup` steps, then a
    cosine (or linear) decay to `min_ratio` at `max_steps`, or constant."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    decay = (1 + math.cos(math.pi * t)) / 2 if schedule == "cosine" else 1 - t
    return min_ratio + (1 - min_ratio) * decay


def bare_twin_losses(model: torch.nn.Module, train: TrainConfig, batches: list, seed: int) -> list[float]:
    """Training losses of a plain torch loop doing what a trial's training step does, transcribed independently:
    AdamW with weight decay on 2-D weights that are not MTA parameters (or on all, with decay='all'), the
    schedule above, gradient clipping by global norm, per-step seeding of the random draws, weighted mean
    cross-entropy over the answer-weighted positions."""
    decay = [p for n, p in model.named_parameters() if train.decay == "all" or (p.ndim == 2 and "mta_" not in n)]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=train.lr, betas=train.betas, eps=train.eps)
    model.train()
    losses = []
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = train.lr * twin_lr_factor(
                step, train.warmup_steps, train.max_steps, train.schedule, train.min_lr_ratio
            )
        torch.manual_seed(seed * 1_000_003 + step)
        logits = model(batch["tokens"]).float()
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten(), reduction="none")
        weight = batch["loss_weight"].flatten().float()
        loss = (nll * weight).sum() / weight.sum().clamp_min(1.0)
        loss.backward()
        if train.grad_clip:  # over the optimiser's parameters, in its order (a norm summed in another order differs
            # in the last bit, and 200 steps make that visible)
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def lightning_losses(model_config: ModelConfig, train: TrainConfig, batches: list, seed: int) -> tuple:
    """Training losses of the Lightning path a trial uses (LMModule + the trial's Trainer arguments) on the given
    batches, and the module's initial state (for the twin to start from)."""
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from lightning_modules.callbacks import trainer_kwargs
    from lightning_modules.lm_module import LMModule

    class Losses(Callback):
        def __init__(self):
            self.values: list[float] = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.values.append(float(outputs["loss"]))

    module = LMModule(model_config, train, seed=seed)
    module.setup = lambda stage: None  # FLOP counting is not part of a training step
    initial = {k: v.clone() for k, v in module.model.state_dict().items()}
    losses = Losses()
    kwargs = {**trainer_kwargs(train), "limit_val_batches": 0, "val_check_interval": None, "logger": False}
    trainer = L.Trainer(callbacks=[losses], **kwargs)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None))
    return losses.values, initial


def _median_ms(runs: list[list[float]], warmup: int) -> float:
    return statistics.median(t for run in runs for t in run[warmup:]) * 1e3


def _bench_shape(shape: TrainShape, steps: int, repeats: int, warmup: int, bare: bool) -> dict:
    vocab = 259  # the byte tokenizer's vocabulary
    batches = _batches(vocab, shape.batch, shape.seq, steps)
    variants = (*VARIANTS, PURE_TORCH)
    configs = {v: _model_config(v, vocab, shape) for v in variants}
    runs: dict[str, list] = {v: [] for v in variants}
    bare_runs: list = []
    for _ in range(repeats):  # round-robin, so slow phases of a shared machine hit every variant alike
        for v in variants:
            with kernel.path("torch" if v == PURE_TORCH else "fused"):
                runs[v].append(lightning_step_times(configs[v], batches))
        if bare:
            bare_runs.append(bare_step_times(configs["baseline"], batches))
    paired = paired_step_times(configs, batches * repeats)
    base_ms = _median_ms(runs["baseline"], warmup)
    rows = []
    for v in variants:
        model = TransformerLM(configs[v])
        tokens = batches[0]["tokens"]
        saved = saved_bytes(lambda m=model, t=tokens: lm_loss(m(t), batches[0]["targets"]))  # noqa: B023
        ms = _median_ms(runs[v], warmup)
        counts = model.count_params()
        rows.append(
            {
                "variant": v,
                "step_ms": ms,
                "tokens_per_s": shape.batch * shape.seq / (ms / 1e3),
                "step_time_vs_baseline": ms / base_ms,
                "paired_step_ms": statistics.median(paired[v][warmup:]) * 1e3,
                "paired_vs_baseline": paired_ratio(paired[v], paired["baseline"], warmup),
                "activation_mib": saved / 2**20,
                "params": counts["total"],
                "mta_params": counts["mta"],
            }
        )
    model = {**asdict(configs["baseline"]), "attention": None}
    out = {"shape": asdict(shape), "model": model, "variants": rows}
    if bare:
        bare_ms = _median_ms(bare_runs, warmup)
        out["lightning_overhead"] = {
            "lightning_step_ms": base_ms,
            "bare_step_ms": bare_ms,
            "lightning_vs_bare": base_ms / bare_ms,
        }
    return out


def run(steps: int = 12, repeats: int = 3, warmup: int = 2, shapes: tuple[TrainShape, ...] = SHAPES) -> dict:
    return {
        "torch": torch.__version__,
        **machine(),
        "steps": steps,
        "repeats": repeats,
        "shapes": [_bench_shape(s, steps, repeats, warmup, bare=i == 0) for i, s in enumerate(shapes)],
    }
