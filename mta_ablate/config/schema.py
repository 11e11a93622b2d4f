"""`ExperimentConfig`: the one typed description of a training run (model + attention + task + train + tracking).

Built from plain data (what Hydra composes, what a sweep produces, what MLflow stores) by `experiment_from_dict`,
which validates everything that can be checked without training, so mistakes surface before anything is written.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from typing import Any

from mta_ablate.attention.spec import AttentionSpec
from mta_ablate.config.tasks import TaskConfig, task_config
from mta_ablate.config.train import TrainConfig
from mta_ablate.errors import ConfigError
from mta_ablate.model.config import ModelConfig
from mta_ablate.paths import check_name
from mta_ablate.typed import conforms, describe, from_dict

log = logging.getLogger(__name__)

SECTIONS = ("model", "attention", "task", "train", "tracking", "seed")
MAX_SEED = 2**32 - 1
"""Lightning's `seed_everything` replaces a larger seed by 0 (with a warning): refused instead."""


@dataclass(frozen=True, kw_only=True)
class TrackingConfig:
    """Where and under which names the run is recorded."""

    experiment: str = "train"
    """MLflow experiment name."""
    run_name: str | None = None
    """MLflow run name and checkpoint folder; None derives one from arm and seed."""
    tags: dict = field(default_factory=dict)
    """Extra MLflow tags."""


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything one trial runs. `resolved` is the plain data it was built from (the sections as composed, only the
    keys that were set): what a sweep stores and what MLflow's params flatten; `as_plain` gives every field."""

    model: ModelConfig
    task: TaskConfig
    """The task's own typed config (`mta_ablate.config.tasks`): it knows its vocabulary and sequence length."""
    train: TrainConfig
    tracking: TrackingConfig
    seed: int
    arm: str
    resolved: dict

    def __post_init__(self) -> None:
        check_name(self.tracking.experiment, "tracking.experiment")
        derived = "the run name (the arm name, then -seed<N>)"
        check_name(self.run_name, "tracking.run_name" if self.tracking.run_name else derived)

    @property
    def attention(self) -> AttentionSpec:
        return self.model.attention

    @property
    def run_name(self) -> str:
        return self.tracking.run_name or f"{self.arm}-seed{self.seed}"


def derive_model(model_values: dict[str, Any], spec: AttentionSpec, task: TaskConfig) -> ModelConfig:
    """The derive step: the model takes its vocabulary from the task (the alphabet, or the tokenizer's spec) and its
    attention from the attention section; the task's sequences must then fit it. Logged (debug) with what it derived.
    The one place where one section of an experiment is computed from another."""
    model = from_dict(ModelConfig, {**model_values, "vocab_size": task.vocab_size, "attention": spec}, "model")
    _check_fits(model, task.seq_len, task.name)
    log.debug(
        "derived model.vocab_size=%d from task %s; its sequences: %d tokens", model.vocab_size, task.name, task.seq_len
    )
    return model


def _check_fits(model: ModelConfig, seq_len: int, task: str) -> None:
    """The task's sequences fit the model (RoPE tables) and every key-query kernel fits the sequence."""
    if seq_len > model.max_seq_len:
        raise ConfigError(
            f"task {task}: its sequences are {seq_len} tokens, longer than model.max_seq_len={model.max_seq_len}; "
            f"raise model.max_seq_len to >= {seq_len} or shorten the task"
        )
    for name in ("qk_pre", "qk_post"):
        kernel = getattr(model.attention, name)
        if kernel and max(kernel) > seq_len:
            raise ConfigError(
                f"attention.{name}={list(kernel)}: wider than the task's {seq_len}-token sequences; "
                f"allowed: c_q, c_k <= {seq_len}"
            )


def experiment_from_dict(values: dict[str, Any], arm: str | None = None) -> ExperimentConfig:
    """Validate plain data into an `ExperimentConfig`; raises `ConfigError` naming the first bad key."""
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown config section; allowed: {', '.join(SECTIONS)}")
    missing = [s for s in SECTIONS if s not in values]
    if missing:
        raise ConfigError(f"{missing[0]}: missing config section")
    seed = _checked_seed(values["seed"])
    attention_values = dict(values["attention"] or {})
    attention_name = attention_values.pop("name", None)
    spec = AttentionSpec.from_dict(attention_values)
    task_values = dict(values["task"] or {})
    if "name" not in task_values:
        raise ConfigError("task.name: missing; choose a task group, e.g. task=find_block")
    task = task_config(task_values.pop("name"), **task_values)
    model_values = dict(values["model"] or {})
    model_values.pop("name", None)
    for reserved in ("vocab_size", "attention"):
        if reserved in model_values:
            raise ConfigError(
                f"model.{reserved}: set by the {'task' if reserved == 'vocab_size' else 'attention'} "
                f"group, not in model"
            )
    model = derive_model(model_values, spec, task)
    train = from_dict(TrainConfig, dict(values["train"] or {}), "train")
    tracking = from_dict(TrackingConfig, dict(values["tracking"] or {}), "tracking")
    return ExperimentConfig(
        model=model,
        task=task,
        train=train,
        tracking=tracking,
        seed=seed,
        arm=arm or attention_name or "custom",
        resolved=values,
    )


def _checked_seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed={seed!r}: expected an integer in [0, {MAX_SEED}] (the range numpy and Lightning seed)")
    return seed


CHANGEABLE = ("train", "tracking")
"""Sections a trial may change in its arm's config (with `seed`); the others feed the derive step."""


def with_changes(config: ExperimentConfig, changes: dict[str, Any]) -> ExperimentConfig:
    """`config` with dotted-key changes (`seed`, `train.max_steps`, `tracking.run_name`, ...) made by
    `dataclasses.replace`: each changed section checks its types and itself again, and `resolved` gets the same
    changes. Nothing is serialised or parsed: a sweep's trials are made this way from their arm's config."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in CHANGEABLE}
    resolved, seed = copy.deepcopy(config.resolved), config.seed
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        if key == "seed":
            seed = _checked_seed(value)
        elif section in sections and name in {f.name for f in dataclasses.fields(getattr(config, section))}:
            sections[section][name] = value
        else:
            raise ConfigError(f"{key}: a trial changes seed, {', '.join(f'{s}.<field>' for s in CHANGEABLE)} only")
        (resolved.setdefault(section, {}) if section else resolved)[name] = value
    for name, values in sections.items():  # types first, so each section's own checks can trust them
        hints = typing.get_type_hints(type(getattr(config, name)))
        for key, value in values.items():
            if not conforms(value, hints[key]):
                raise ConfigError(f"{name}.{key}={value!r}: expected {describe(hints[key])}")
    replaced = {name: dataclasses.replace(getattr(config, name), **values) for name, values in sections.items()}
    return dataclasses.replace(config, seed=seed, resolved=resolved, **replaced)


def as_plain(config: ExperimentConfig) -> dict[str, Any]:
    """What ran, every field of every section, as plain data that `experiment_from_dict` reads back into the same
    config (dumped as each run's config.yaml). The derived model fields (its vocabulary and attention) are left out:
    they come from the task and attention sections."""
    names = {s: (config.resolved.get(s) or {}).get("name") for s in ("model", "attention")}
    model = {f.name: getattr(config.model, f.name) for f in dataclasses.fields(config.model)}
    del model["vocab_size"], model["attention"]
    sections = {
        "model": {**({"name": names["model"]} if names["model"] else {}), **model},
        "attention": {**({"name": names["attention"]} if names["attention"] else {}), **config.attention.to_dict()},
        "task": {"name": config.task.name, **dataclasses.asdict(config.task)},
        "train": dataclasses.asdict(config.train),
        "tracking": dataclasses.asdict(config.tracking),
        "seed": config.seed,
    }
    return _lists(sections)


def _lists(value: Any) -> Any:
    """Tuples as lists, all the way down (YAML and JSON have lists)."""
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value
