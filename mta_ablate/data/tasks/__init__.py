"""Task registry: `build_task(name, **params)` -> a task with `.batch(n, seed)`, `.samples(n, seed)`,
`.vocab_size`, `.seq_len` and `.config` (see `mta_ablate.data` for the interface)."""

from __future__ import annotations

from mta_ablate.data.tasks.babilong import BabiLongConfig, BabiLongTask
from mta_ablate.data.tasks.base import as_generator, make_batch, parse_overrides
from mta_ablate.data.tasks.find_block import FindBlockConfig, FindBlockTask
from mta_ablate.data.tasks.lm import LMConfig, LMTask, validation_windows
from mta_ablate.data.tasks.needle import NeedleConfig, NeedleTask
from mta_ablate.errors import ConfigError
from mta_ablate.typed import from_dict

TASKS: dict[str, tuple[type, type]] = {
    "find_block": (FindBlockConfig, FindBlockTask),
    "needle": (NeedleConfig, NeedleTask),
    "babilong": (BabiLongConfig, BabiLongTask),
    "lm": (LMConfig, LMTask),
}


def task_config(name: str, **params):
    """The validated frozen config of task `name` (string values are parsed by field type)."""
    if name not in TASKS:
        raise ConfigError(f"task={name!r}: expected one of {sorted(TASKS)}")
    config_cls = TASKS[name][0]
    return from_dict(config_cls, parse_overrides(config_cls, params), "task")


def build_task(name: str, **params):
    """Build a task from its name and config fields, e.g. build_task("find_block", n_blocks=52)."""
    config = task_config(name, **params)
    return TASKS[name][1](config)


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
