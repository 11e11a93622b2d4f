"""Adding a task touches only the places `docs/architecture.md` names: its config (with its vocabulary and sequence
length; its line in `TASK_CONFIGS`), its task class (its line in `TASKS`), its entry in `TASK_METRICS`, and an
evaluator (its line in `EVALUATORS`). Here all of them live in this file and are registered for one test; a task
meant for `mta-ablate train task=...` also gets its YAML in `mta_ablate/conf/task/`."""

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from mta_ablate import metrics
from mta_ablate.config import tasks as task_configs
from mta_ablate.config.schema import experiment_from_dict
from mta_ablate.data import tasks
from mta_ablate.data.tasks.base import as_generator, make_batch
from mta_ablate.evaluate import task_answer_metrics
from mta_ablate.evaluate.tasks import EVALUATORS
from mta_ablate.sweep.resolve import check_objective
from mta_ablate.trial import run_trial


@dataclass(frozen=True)
class CopyConfig:
    """Copy a random 3-letter word after a separator: `abc#abc`."""

    name: ClassVar[str] = "copy"
    length: int = 3
    vocab_size: ClassVar[int] = 12

    @property
    def seq_len(self) -> int:
        return 2 * self.length + 1


class CopyTask:
    name = "copy"

    def __init__(self, config: CopyConfig):
        self.config, self.vocab_size, self.seq_len = config, config.vocab_size, config.seq_len

    def batch(self, n, seed):
        rng, k = as_generator(seed), self.config.length
        word = rng.integers(2, 12, size=(n, k))
        seq = np.concatenate([np.zeros((n, 1), int), word, np.ones((n, 1), int), word], axis=1)  # <bos> w # w
        answer = np.zeros(seq.shape, bool)
        answer[:, -k:] = True
        return make_batch(seq, answer.astype(np.float32), answer)

    def samples(self, n, seed):
        return [{"input": str(row[: self.config.length + 1].tolist())} for row in self.batch(n, seed)["tokens"]]


def copy_metrics(model, task, n_samples: int, final: bool) -> dict[str, float]:
    scored, _, _ = task_answer_metrics(model, task, n_samples)
    return {"error": 1.0 - float(scored["exact"].mean())}


@pytest.mark.usefixtures("tracked_workspace")
def test_a_new_task_trains_logs_its_family_metrics_and_is_an_objective(workspace, monkeypatch):
    monkeypatch.setitem(task_configs.TASK_CONFIGS, "copy", CopyConfig)
    monkeypatch.setitem(tasks.TASKS, "copy", (CopyConfig, CopyTask))
    monkeypatch.setitem(metrics.TASK_METRICS, "copy", metrics.TaskMetrics("copy", ("copy/error",), "val/error"))
    monkeypatch.setitem(EVALUATORS, "copy", copy_metrics)
    check_objective("copy/error", "copy")  # a sweep may optimise it
    assert metrics.validation_key("copy/error") == "val/error" and metrics.direction("copy/error") == "minimize"
    values = {
        "model": {"dim": 32, "n_layers": 1, "n_heads": 2, "ffn_hidden": 64, "max_seq_len": 16},
        "attention": {"name": "baseline"},
        "task": {"name": "copy", "length": 3},
        "train": {"max_steps": 4, "batch_size": 8, "val_every": 2, "val_batches": 1, "eval_batches": 1},
        "tracking": {"experiment": "copy"},
        "seed": 0,
    }
    values["train"] |= {"val_samples": 8, "eval_samples": 16, "warmup_steps": 0, "progress": "none", "threads": 1}
    result = run_trial(experiment_from_dict(values))
    assert 0.0 <= result.metrics["copy/error"] <= 1.0
    assert "final/error" in result.metrics and "final/loss" in result.metrics
