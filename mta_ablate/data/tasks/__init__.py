"""Task registry: `build_task(name, **params)` -> a task with `.batch(n, seed)`, `.samples(n, seed)`,
`.vocab_size`, `.seq_len` and `.config` (see `mta_ablate.data` for the interface). Each task's config class lives in
`mta_ablate.config.tasks` (no torch); `TASKS` pairs it with the class that generates its batches."""

from __future__ import annotations

from mta_ablate.config.tasks import task_config
from mta_ablate.data.tasks.babilong import BabiLongConfig, BabiLongTask
from mta_ablate.data.tasks.base import as_generator, make_batch, parse_overrides
from mta_ablate.data.tasks.find_block import FindBlockConfig, FindBlockTask
from mta_ablate.data.tasks.lm import LMConfig, LMTask, validation_windows
from mta_ablate.data.tasks.needle import NeedleConfig, NeedleTask
from mta_ablate.errors import ConfigError

TASKS: dict[str, tuple[type, type]] = {
    "find_block": (FindBlockConfig, FindBlockTask),
    "needle": (NeedleConfig, NeedleTask),
    "babilong": (BabiLongConfig, BabiLongTask),
    "lm": (LMConfig, LMTask),
}


def build_task(name: str, **params):
    """Build a task from its name and config fields, e.g. build_task("find_block", n_blocks=52)."""
    return task_from_config(task_config(name, **params))


def task_from_config(config):
    """Build the task for an existing config object."""
    for config_cls, task_cls in TASKS.values():
        if type(config) is config_cls:
            return task_cls(config)
    raise ConfigError(f"task config {config!r}: expected one of {[c.__name__ for c, _ in TASKS.values()]}")


__all__ = [
    "TASKS",
    "BabiLongConfig",
    "BabiLongTask",
    "FindBlockConfig",
    "FindBlockTask",
    "LMConfig",
    "LMTask",
    "NeedleConfig",
    "NeedleTask",
    "as_generator",
    "build_task",
    "make_batch",
    "parse_overrides",
    "task_config",
    "task_from_config",
    "validation_windows",
]
