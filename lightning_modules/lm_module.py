"""`LMModule`: the LightningModule around `TransformerLM` (AdamW, warm-up + decay, masked loss, task metrics).

Metric keys (slash-namespaced, by global step):
    train/loss, train/lr                              every `log_every` steps
    val/loss      weighted loss, as trained           every `val_every` steps
    val/ppl       exp(mean NLL) over scored tokens (for lm: the mean of the per-corpus perplexities)
    val/error     fraction of sequences with any wrong answer token (teacher-forced argmax; tasks with answers)
    val/answer_acc  token accuracy on answer positions
    val/loss_best   best val/loss so far
    and the task's own metrics (see lightning_modules/evaluation.py)
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from lightning_modules.evaluation import ScoreSums, forward_rows, task_metrics
from lightning_modules.sharding import forward_model, is_sharded
from mta_ablate.config.schema import TrainConfig
from mta_ablate.model import ModelConfig, TransformerLM, is_mta_param, lm_loss


def lr_factor(step: int, train: TrainConfig) -> float:
    """Learning-rate multiplier at `step`: linear warm-up, then cosine / linear decay to min_lr_ratio, or constant."""
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    if train.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - train.warmup_steps) / max(1, train.max_steps - train.warmup_steps))
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if train.schedule == "cosine" else 1.0 - progress
    return train.min_lr_ratio + (1 - train.min_lr_ratio) * shape


def decays(name: str, param: torch.nn.Parameter, mode: str) -> bool:
    """Whether weight decay applies: all parameters, or only projection/embedding matrices."""
    return mode == "all" or (param.ndim == 2 and not is_mta_param(name))


class CausalSDPA(torch.overrides.TorchFunctionMode):
    """Records what torch's FLOP counter overcharges causal SDPA: it counts the math decomposition over the whole
    (S, S) map, forward (QK^T, PV) and backward (twice that), where the causal half is all that attention needs and
    all the blocked MTA op computes. `overcount` is the difference, in FLOPs."""

    def __init__(self):
        super().__init__()
        self.overcount = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and kwargs.get("is_causal"):
            q, v = args[0], args[2]
            *lead, s, d = q.shape
            heads = math.prod(lead)
            full = 3 * (2 * heads * s * s * d + 2 * heads * s * s * v.shape[-1])  # forward, and backward = 2 x forward
            self.overcount += full - full * (s + 1) // (2 * s)
        return func(*args, **kwargs)


def step_flops(model_config: ModelConfig, batch_size: int, seq_len: int, device_type: str = "cpu") -> int:
    """Forward + backward FLOPs of one training batch, counted on a meta-device model (nothing is allocated), with the
    MTA op tiled as on `device_type`. One convention for every arm: attention is charged its causal half (with the
    blocked op's halo rows and its recomputation, which it really runs), so an arm that does more work never counts
    less than the baseline."""
    from lightning.fabric.utilities.throughput import measure_flops

    from mta_ablate.attention.op import tiled_as

    with torch.device("meta"):
        meta_model = TransformerLM(model_config)
        tokens = torch.zeros(batch_size, seq_len, dtype=torch.long)
    with tiled_as(device_type), CausalSDPA() as causal:
        total = measure_flops(meta_model, lambda: meta_model(tokens), lambda y: y.float().sum())
    return int(total - causal.overcount)


class LMModule(L.LightningModule):
    def __init__(self, model_config: ModelConfig, train: TrainConfig, task=None, seed: int = 0):
        super().__init__()
        self.model = TransformerLM(model_config, seed=seed)
        self.model.checkpoint_blocks = train.activation_checkpointing
        self.seed = seed
        self.train_config = train
        self.task = task  # for the task's own validation metrics (perplexity per corpus, toy error, ...)
        self._scores = ScoreSums()
        self.best_val_loss = math.inf

    def setup(self, stage: str) -> None:
        """FLOPs of one training batch (forward + backward), counted on a meta-device copy, for ThroughputMonitor."""
        if stage != "fit" or getattr(self, "flops_per_batch", None):
            return
        datamodule = self.trainer.datamodule
        device = self.trainer.strategy.root_device.type
        self.flops_per_batch = step_flops(self.model.config, datamodule.rows, datamodule.task.seq_len, device)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(tokens)

    def configure_optimizers(self):
        t = self.train_config
        groups = {True: [], False: []}
        for name, param in self.model.named_parameters():
            groups[decays(name, param, t.decay)].append(param)
        optimizer = torch.optim.AdamW(
            [{"params": groups[True], "weight_decay": t.weight_decay}, {"params": groups[False], "weight_decay": 0.0}],
            lr=t.lr,
            betas=t.betas,
            eps=t.eps,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, t))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """Random draws of step k (dropout masks) come from (seed, k, micro-batch): the same in every arm of a seed,
        and after a resume, whatever the model's construction or earlier steps drew from the global generator."""
        torch.manual_seed(self.seed * 1_000_003 + self.global_step + batch.get("micro", 0) * 2**40)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["tokens"])
        loss = lm_loss(logits, batch["targets"], batch["loss_weight"], batch.get("loss_norm"))
        self._check_finite(loss)
        passes = self.train_config.accumulation
        micro = batch.get("micro", 0)
        self._step_loss = loss.detach() if micro == 0 else self._step_loss + loss.detach()
        if micro == passes - 1:  # the step's loss: the mean of its passes' (each normalised by the whole share)
            step_loss = self._step_loss / passes
            self.log("train/loss", step_loss, prog_bar=True, sync_dist=self.trainer.world_size > 1)  # ranks' mean
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Raise FloatingPointError once the training loss is NaN or infinite. On the CPU every step is checked; on
        an accelerator the check is a device-side flag read every `log_every` steps (when logging synchronises
        anyway), so the host never waits for the device in between."""
        finite = torch.isfinite(loss.detach())
        self._finite = finite if getattr(self, "_finite", None) is None else self._finite & finite
        step = self.global_step
        if loss.device.type != "cpu" and (step + 1) % self.train_config.log_every and step + 1 < self.trainer.max_steps:
            return
        if not bool(self._finite):
            first = getattr(self, "_checked_step", -1) + 1
            if first >= step:  # this step's loss (every step on the CPU)
                raise FloatingPointError(f"training loss is {float(loss)} at step {step}")
            raise FloatingPointError(f"training loss is not finite (nan or inf) between steps {first} and {step}")
        self._finite, self._checked_step = None, step

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the global gradient norm to `train.grad_clip` (0: off): Lightning's clipping on one device and under
        DDP; under FSDP the sharded root's own `clip_grad_norm_`, which reduces the norm across the shards."""
        clip = self.train_config.grad_clip
        if not clip:
            return
        if is_sharded(self.trainer):
            self.trainer.strategy.model.clip_grad_norm_(clip)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def on_validation_epoch_start(self) -> None:
        self._scores = ScoreSums()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._scores.add(forward_rows(self.model, batch["tokens"], self.train_config.rows_per_pass), batch)

    def on_validation_epoch_end(self) -> None:
        if not self._scores.scored:
            return
        own = {}
        if self.task is not None:
            model = forward_model(self.trainer, self.model)  # FSDP: forwards through the sharded root
            with self.trainer.precision_plugin.forward_context():  # the precision validation_step ran in
                own = task_metrics(model, self.task, self.train_config.val_samples, final=False)
        metrics = {**self._scores.metrics(owned=own.keys()), **own}  # a name the task's evaluator returns is its own
        self.best_val_loss = min(self.best_val_loss, metrics["loss"])
        logged = {f"val/{k}": v for k, v in metrics.items()}
        self.log_dict({**logged, "val/loss_best": self.best_val_loss})

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["best_val_loss"] = self.best_val_loss
        checkpoint["passes_per_step"] = self.train_config.accumulation

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Lightning restores its batch counters in forward/backward passes: a resume with another number of passes
        per step would put optimizer steps across data steps, so it is refused."""
        self.best_val_loss = checkpoint.get("best_val_loss", math.inf)
        saved, now = checkpoint.get("passes_per_step", 1), self.train_config.accumulation
        if saved != now:
            raise ValueError(
                f"the checkpoint was trained with {saved} forward/backward pass(es) per step and train.micro_batch now "
                f"gives {now}: resume with the micro-batch it started with, or start a new run"
            )
