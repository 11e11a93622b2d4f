"""Callbacks built from the config: throughput, peak memory, checkpoints, progress, and step reports for pruning."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar, ThroughputMonitor

from mta_ablate.config.schema import TrainConfig

Reporter = Callable[[int, dict[str, float]], None]
"""Called after every validation with (global step, metrics); may raise to stop the run (pruning)."""


def peak_memory_mib() -> float:
    """Peak memory of this process: CUDA max allocated when on a GPU, else the CPU's max resident set size."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class PeakMemory(Callback):
    """Logs `perf/peak_mem_mib` with the training metrics."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer._logger_connector.should_update_logs:
            pl_module.log("perf/peak_mem_mib", peak_memory_mib())


def on_cuda(trainer) -> bool:
    return trainer.strategy.root_device.type == "cuda"


@contextlib.contextmanager
def _cuda_sync_skipped():
    synchronize = torch.cuda.synchronize
    torch.cuda.synchronize = lambda device=None: None
    try:
        yield
    finally:
        torch.cuda.synchronize = synchronize


class StepThroughput(ThroughputMonitor):
    """Lightning's ThroughputMonitor, but the host waits for the GPU only on the steps whose rates are logged (every
    `log_every`), not on every batch: in between it queues work ahead. The rates are rolling averages over a window
    of steps whose last point is synchronised."""

    def _update(self, trainer, pl_module, batch, iter_num: int) -> None:
        if not on_cuda(trainer):
            return super()._update(trainer, pl_module, batch, iter_num)
        if not trainer.fit_loop._should_accumulate() and trainer._logger_connector.should_update_logs:
            torch.cuda.synchronize()  # a step whose rates are logged: time it to the GPU's end
        with _cuda_sync_skipped():
            return super()._update(trainer, pl_module, batch, iter_num)


class CheckpointOnValidation(Callback):
    """Writes `last.ckpt` at the end of every validation (every `val_every` steps), atomically (write, then rename),
    so a run killed at any moment leaves a readable checkpoint that includes the validation it just logged."""

    def __init__(self, dirpath: Path):
        self.path = Path(dirpath) / "last.ckpt"

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        partial = self.path.with_suffix(".partial")
        if trainer.is_global_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(partial)  # every rank takes part (FSDP gathers shards); rank 0 writes
        if trainer.is_global_zero:
            os.replace(partial, self.path)


class FlushLoggerOnCheckpoint(Callback):
    """Metrics become durable together with each checkpoint, so a run killed after it resumes with no gaps."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        for logger in trainer.loggers:
            if hasattr(logger, "flush"):
                logger.flush()


class ReportValidation(Callback):
    """Hands the validation metrics to a reporter (the sweep's pruner) by global step, on rank 0.

    When the reporter raises (a pruning decision), training stops after this validation on every rank: rank 0
    broadcasts the decision, so no rank is left waiting in a collective. `stopped` keeps the exception for the
    caller to raise once `fit` has returned."""

    def __init__(self, reporter: Reporter | None):
        self.reporter = reporter
        self.stopped: Exception | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        if self.reporter is not None and trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            try:
                self.reporter(trainer.global_step, metrics)
            except Exception as exc:  # noqa: BLE001  (re-raised by the caller after fit)
                self.stopped = exc
        stop = self.stopped is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            trainer.should_stop = True


def build_callbacks(train: TrainConfig, checkpoint_dir: Path, reporter: Reporter | None) -> list[Callback]:
    callbacks: list[Callback] = [
        StepThroughput(  # rates are rolling averages over the last `window_size` steps
            batch_size_fn=lambda b: b["tokens"].shape[0],
            length_fn=lambda b: b["tokens"].numel(),
            window_size=min(50, max(2, train.max_steps // 4)),
        ),
        PeakMemory(),
    ]
    if train.checkpoint:
        callbacks += [CheckpointOnValidation(checkpoint_dir), FlushLoggerOnCheckpoint()]
    if train.progress == "rich" or (train.progress == "auto" and sys.stderr.isatty()):
        callbacks.append(RichProgressBar())
    if reporter is not None or train.world_size > 1:  # every rank takes part in rank 0's pruning decision
        callbacks.append(ReportValidation(reporter))
    return callbacks


def resolved_device(train: TrainConfig) -> tuple[str, str]:
    """(accelerator, precision) with 'auto' resolved: CUDA + bf16-mixed when CUDA is present, else CPU + 32-true."""
    cuda = torch.cuda.is_available()
    accelerator = train.accelerator if train.accelerator != "auto" else ("cuda" if cuda else "cpu")
    precision = train.precision if train.precision != "auto" else ("bf16-mixed" if accelerator == "cuda" else "32-true")
    return accelerator, precision


def trainer_kwargs(train: TrainConfig, strategy=None) -> dict:
    """Trainer arguments: device and precision resolved (`resolved_device`); `strategy` is a multi-rank trial's
    (`mta_ablate.ranks.strategy`), which also sets devices and nodes. Gradient clipping is the module's own
    (`LMModule.configure_gradient_clipping`: FSDP needs its own norm), so the Trainer is given none."""
    accelerator, precision = resolved_device(train)
    return dict(
        accelerator=accelerator,
        devices=train.devices if strategy is not None else 1,
        num_nodes=train.num_nodes if strategy is not None else 1,
        strategy=strategy or "auto",
        use_distributed_sampler=False,  # training rows are sharded by the data module; validation is whole per rank
        precision=precision,
        max_steps=train.max_steps,
        val_check_interval=train.val_every * train.accumulation,  # counted in micro-batches
        check_val_every_n_epoch=None,
        limit_val_batches=train.val_batches,
        accumulate_grad_batches=train.accumulation,
        num_sanity_val_steps=0,
        log_every_n_steps=train.log_every,
        enable_progress_bar=train.progress == "rich" or (train.progress == "auto" and sys.stderr.isatty()),
        enable_model_summary=False,
        enable_checkpointing=False,  # CheckpointOnValidation writes the one checkpoint we keep
        deterministic=train.deterministic,  # torch's deterministic algorithms (GPU runs that need repeats)
    )
