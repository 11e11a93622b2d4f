"""What every metric means and what each task logs: one torch-free registry that training, sweeps and `dashboards/`
read (no name-pattern guessing elsewhere).

Keys: `val/<name>` at every validation, `final/<name>` at the end (the generic metrics every task logs),
`<family>/<name>` for a task's own final metrics (`toy/error`, `needle/ctx512/k2/exact`, ...), `perf/<name>` for cost.
A metric's meaning (direction, whether it is a rate in [0, 1]) comes from the first known name met reading its
key from the end (`needle/ctx512/k2/exact` -> `exact`, `final/ppl/books` -> `ppl`, `toy/error_pos0` -> `error`).

Adding a task: its config in `mta_ablate/config/tasks.py` (and its line in `TASK_CONFIGS`), its task class in
`mta_ablate/data/tasks/` (and its line in `TASKS` there), its YAML in `mta_ablate/conf/task/`, its entry in
`TASK_METRICS` below, and its evaluator in `EVALUATORS` (`mta_ablate/evaluate/tasks.py`) when no existing one fits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    direction: str
    """"minimize" or "maximize"."""
    rate: bool = False
    """A fraction in [0, 1]: a mean's confidence interval is clipped to it, a difference to [-1, 1]."""


LOWER, HIGHER = Metric("minimize"), Metric("maximize")
ERROR, ACCURACY = Metric("minimize", rate=True), Metric("maximize", rate=True)

METRICS: dict[str, Metric] = {
    # generic, every task: val/<name> and final/<name>
    "loss": LOWER,
    "loss_best": LOWER,
    "ppl": LOWER,
    "bpb": LOWER,
    "error": ERROR,
    "answer_acc": ACCURACY,
    # tasks' own
    "token_error": ERROR,
    "accuracy": ACCURACY,
    "exact": ACCURACY,
    "first_token": ACCURACY,
    "wrong_needle": ERROR,
    # what an onset or rate objective reduces a trial to (objective/onset_step, objective/crossed)
    "onset_step": LOWER,
    "crossed": ACCURACY,
    # cost
    "tokens_per_s": HIGHER,
    "step_ms": LOWER,
    "peak_mem_mib": LOWER,
    "duration_s": LOWER,
    "items_per_sec": HIGHER,
}
GENERIC = ("loss", "ppl", "error", "answer_acc", "bpb", "loss_best")
"""What every task logs as val/<name> during training and final/<name> at the end."""

_INDEXED = re.compile(r"^(.+?)_?(pos)?\d+$")  # error_pos0 -> error


@dataclass(frozen=True)
class TaskMetrics:
    family: str
    """Prefix of the task's own final metrics."""
    quality: tuple[str, ...]
    """Final metrics a report compares, the headline first."""
    validation: str
    """What tracks the headline at every validation (pruning, learning curves, time to threshold)."""
    own: str = ".+"
    """A regular expression matching every name the evaluator returns (the key after `<family>/`), so that a sweep's
    objective is checked against them; the default accepts any name."""

    @property
    def headline(self) -> str:
        return self.quality[0]


TASK_METRICS: dict[str, TaskMetrics] = {
    "lm": TaskMetrics("final", ("final/ppl",), "val/ppl"),
    "find_block": TaskMetrics(
        "toy",
        ("toy/error",),
        "val/error",
        r"error(_pos\d+)?|token_error",
    ),
    "needle": TaskMetrics(
        "needle",
        ("needle/accuracy", "needle/first_token", "needle/wrong_needle"),
        "val/accuracy",
        r"accuracy|first_token|wrong_needle|ctx\d+/k\d+(/[^/]+)?/(exact|first_token|wrong_needle)",
    ),
    "babilong": TaskMetrics(
        "babilong",
        ("babilong/accuracy",),
        "val/accuracy",
        r"accuracy|qa\d+/len\d+/(exact|first_token)",
    ),
}

HEADLINE = tuple(t.headline for t in TASK_METRICS.values())
QUALITY = (*(m for t in TASK_METRICS.values() for m in t.quality), "final/answer_acc", "final/loss")
"""Quality metrics a report compares when present (after the sweep's objective), in this order."""


def describe(key: str) -> Metric | None:
    """The meaning of a metric key, or None when no part of it is a known metric name."""
    for part in reversed(key.lower().split("/")):
        if part in METRICS:
            return METRICS[part]
        indexed = _INDEXED.match(part)
        if indexed and indexed.group(1) in METRICS:
            return METRICS[indexed.group(1)]
    return None


def direction(key: str) -> str:
    """ "minimize" or "maximize" (unknown keys: minimize)."""
    meaning = describe(key)
    return meaning.direction if meaning else "minimize"


def is_rate(key: str) -> bool:
    meaning = describe(key)
    return bool(meaning and meaning.rate)


def family(task: str) -> str:
    return TASK_METRICS[task].family if task in TASK_METRICS else "final"


def validation_key(objective: str, other: str = "val/loss") -> str:
    """The metric logged at every validation that tracks a final objective: `toy/error` -> `val/error`,
    `final/ppl` -> `val/ppl`, a `val/` key -> itself; anything else -> `other`."""
    if objective.startswith("val/"):
        return objective
    for task in TASK_METRICS.values():
        if objective == task.headline:
            return task.validation
    if objective.startswith("final/"):
        return "val/" + objective.removeprefix("final/")
    return other
