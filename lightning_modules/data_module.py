"""`TaskDataModule`: any task of `mta_ablate.data` as a LightningDataModule, deterministic and resumable.

Training batch k is `task.batch(batch_size, seed=(seed, k))`, a pure function of the seed and the global step, so the
same seed gives the same batches, and a resumed run continues with exactly the batches it would have seen.
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


class _StepBatches(IterableDataset):
    """Endless training batches, starting at the trainer's global step when iteration begins."""

    def __init__(self, task, batch_size: int, seed: int, start_step: Callable[[], int]):
        self.task, self.batch_size, self.seed, self.start_step = task, batch_size, seed, start_step

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        step = self.start_step()
        while True:
            yield self.task.batch(self.batch_size, step_generator(self.seed, step))
            step += 1


def validation_batches(task, n_batches: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """Fixed validation batches: the task's own held-out batches when it has them, else generated ones."""
    if hasattr(task, "validation_batches"):
        return list(task.validation_batches(n_batches, batch_size))
    return [task.batch(batch_size, step_generator(VALIDATION_SEED, i, 1)) for i in range(n_batches)]


class TaskDataModule(L.LightningDataModule):
    def __init__(self, task, batch_size: int, seed: int, val_batches: int):
        super().__init__()
        self.task, self.batch_size, self.seed, self.n_val = task, batch_size, seed, val_batches
        self._val: list | None = None

    def _global_step(self) -> int:
        return self.trainer.global_step if self.trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        dataset = _StepBatches(self.task, self.batch_size, self.seed, self._global_step)
        return DataLoader(dataset, batch_size=None, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        if self._val is None:
            self._val = validation_batches(self.task, self.n_val, self.batch_size)
        return DataLoader(self._val, batch_size=None, num_workers=0)
