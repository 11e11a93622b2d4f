"""`TaskDataModule`: any task of `mta_ablate.data` as a LightningDataModule, deterministic and resumable.

Training batch k is `task.batch(batch_size, seed=(seed, k))`, a pure function of the seed and the global step, so the
same seed gives the same batches, and a resumed run continues with exactly the batches it would have seen.
On N devices each rank trains on its 1/N of the rows of the same global batch (`shard`).
Validation batches are drawn from a fixed evaluation seed (or a task's own fixed validation windows) and are the same
for every model, arm and seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from mta_ablate.evaluate.common import VALIDATION_SEED


def step_generator(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """An independent random stream per (seed, step, stream)."""
    return np.random.default_rng([seed, step, stream])


def shard(batch: dict[str, torch.Tensor], rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Rank `rank`'s equal share of the rows of a global batch, with `loss_norm`: the global batch's loss weight
    over the number of ranks (the denominator that makes the ranks' averaged gradient the global batch's)."""
    rows = next(iter(batch.values())).shape[0] // world_size
    part = {k: v[rank * rows : (rank + 1) * rows] for k, v in batch.items()}
    part["loss_norm"] = batch["loss_weight"].sum().clamp_min(1.0) / world_size
    return part


def micro_batches(batch: dict[str, torch.Tensor], passes: int) -> list[dict[str, torch.Tensor]]:
    """A rank's share of a step split into `passes` equal micro-batches, each with `loss_norm` = the share's loss
    weight over `passes` (Lightning divides each pass's loss by `passes` again), so the accumulated gradient is the
    gradient of the whole share. `micro` is each part's index in the step."""
    rows = batch["tokens"].shape[0] // passes
    norm = batch["loss_norm"] if "loss_norm" in batch else batch["loss_weight"].sum().clamp_min(1.0)
    parts = []
    for i in range(passes):
        part = {k: v[i * rows : (i + 1) * rows] for k, v in batch.items() if k != "loss_norm"}
        parts.append({**part, "loss_norm": norm / passes, "micro": i})
    return parts


class _StepBatches(IterableDataset):
    """Endless training batches, starting at the trainer's global step when iteration begins. Every rank of a
    multi-device trial draws the same global batch and keeps its share of the rows; with gradient accumulation
    (`passes` > 1) each share comes as that many micro-batches."""

    def __init__(self, task, batch_size: int, seed: int, start_step: Callable[[], int], rank: int, world_size: int,
                 passes: int = 1):  # fmt: skip
        self.task, self.batch_size, self.seed, self.start_step = task, batch_size, seed, start_step
        self.rank, self.world_size, self.passes = rank, world_size, passes

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        step = self.start_step()
        while True:
            batch = self.task.batch(self.batch_size, step_generator(self.seed, step))
            batch = batch if self.world_size == 1 else shard(batch, self.rank, self.world_size)
            yield from micro_batches(batch, self.passes) if self.passes > 1 else [batch]
            step += 1


def validation_batches(task, n_batches: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Fixed validation batches: the task's own held-out batches when it has them, else generated ones."""
    if hasattr(task, "validation_batches"):
        return list(task.validation_batches(n_batches, batch_size))
    return [task.batch(batch_size, step_generator(VALIDATION_SEED, i, 1)) for i in range(n_batches)]


class TaskDataModule(L.LightningDataModule):
    def __init__(
        self, task, batch_size: int, seed: int, val_batches: int, rank: int = 0, world_size: int = 1, passes: int = 1
    ):
        super().__init__()
        self.task, self.batch_size, self.seed, self.n_val = task, batch_size, seed, val_batches
        self.rank, self.world_size, self.passes = rank, world_size, passes
        self._val: list | None = None

    @property
    def rows(self) -> int:
        """Training sequences per forward/backward pass on this rank."""
        return self.batch_size // self.world_size // self.passes

    def _global_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        dataset = _StepBatches(
            self.task, self.batch_size, self.seed, self._global_step, self.rank, self.world_size, self.passes
        )
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        """Every rank validates on all the validation batches: the same numbers as on one device."""
        if self._val is None:
            self._val = validation_batches(self.task, self.n_val, self.batch_size)
        return DataLoader(self._val, batch_size=None, num_workers=0)
