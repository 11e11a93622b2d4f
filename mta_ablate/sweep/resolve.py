"""Each trial resolved once: a sweep's arms are composed (Hydra) and validated once, when the sweep is created; their
resolved configs are stored with the study, and workers and `status` rebuild them without composing again.

    validate_configs(spec)          # {arm: ExperimentConfig}: every arm composed once, its objective checked
    stored_configs(configs, steps)  # -> plain data for the study (each arm's equal-compute max_steps included)
    rebuilt_configs(stored)         # -> {arm: ExperimentConfig}, no Hydra
    trial_config(spec, arm, ...)    # one trial's config: its arm's, with the trial's seed, names and threads
"""

from __future__ import annotations

import json
import re
from typing import Any

from mta_ablate.config.compose import load_experiment
from mta_ablate.config.schema import experiment_from_dict, with_changes
from mta_ablate.data.corpora import check_available
from mta_ablate.errors import ConfigError
from mta_ablate.metrics import GENERIC, TASK_METRICS
from mta_ablate.sweep.design import Arm
from mta_ablate.sweep.spec import SweepSpec, to_override


def check_objective(metric: str, task: str, corpora=()) -> None:
    """The objective must be a metric the task logs, so a trial cannot train fully and then find no objective."""
    head, _, rest = metric.partition("/")
    name, _, corpus = rest.partition("/")
    family = TASK_METRICS[task].family if task in TASK_METRICS else None
    if head in ("final", "val") and name in GENERIC and (not corpus or (name in ("ppl", "bpb") and corpus in corpora)):
        return
    if head == family and head != "final" and re.fullmatch(TASK_METRICS[task].own, rest):
        return
    if head == "perf" and rest:
        return
    allowed = [f"{family}/<{TASK_METRICS[task].own}>"] if family and family != "final" else []
    allowed += [f"final/{g}" for g in GENERIC[:5]] + ["val/<same>"]
    if task == "lm":
        allowed += [f"final/ppl/<corpus: {', '.join(corpora)}>"]
    raise ConfigError(f"objective.metric={metric!r}: task {task} does not log it; allowed: {', '.join(allowed)}")


def validate_configs(spec: SweepSpec) -> dict:
    """Compose and validate the experiment of every arm, once each (fixed designs), or of the base experiment and
    every range end and choice (search). Returns {arm: ExperimentConfig} ({"": base} for a search)."""

    def check(label: str, overrides: dict, arm: str | None = None):
        try:
            config = load_experiment(spec.experiment_overrides(overrides, spec.seeds[0]), arm=arm)
            check_objective(spec.metric, config.task.name, getattr(config.task, "corpora", ()))
            check_available(getattr(config.task, "corpora_needed", ()))
        except ConfigError as exc:
            raise ConfigError(f"sweep {spec.name}, {label}: {exc}") from None
        return config

    if spec.kind != "search":
        return {arm.name: check(f"arm {arm.name!r}", arm.overrides, arm.name) for arm in spec.arms}
    base = check("base experiment", {})
    for p in spec.space:
        values = p.choices if p.type == "categorical" else (p.low, p.high)
        for v in values:
            check(f"search parameter {p.key}={v!r}", {p.key: int(v) if p.type == "int" else v})
    return {"": base}


def stored_configs(configs: dict, max_steps: dict[str, int] | None = None) -> dict[str, dict]:
    """{arm: resolved config as plain data}, with each arm's equal-compute max_steps when there are some."""
    out = {}
    for arm, config in configs.items():
        values = json.loads(json.dumps(config.resolved))
        if max_steps and arm in max_steps:
            values["train"]["max_steps"] = max_steps[arm]
        out[arm] = values
    return out


def rebuilt_configs(stored: dict[str, dict]) -> dict:
    """The stored configs as `ExperimentConfig`s, validated again but not composed (no Hydra)."""
    return {arm: experiment_from_dict(values, arm=arm or None) for arm, values in stored.items()}


def trial_config(spec: SweepSpec, arm: Arm, changes: dict[str, Any], equal_steps: dict[str, int]):
    """One trial's experiment config: its arm's config (composed once, when the sweep was created) with this trial's
    seed, names and threads, by `dataclasses.replace` (`with_changes`); a search composes its sampled arm here."""
    if arm.name not in spec.configs:  # a sampled arm of a search
        extra = [to_override(key, value) for key, value in changes.items() if key != "seed"]
        return load_experiment(spec.experiment_overrides(arm.overrides, changes["seed"], extra), arm=arm.name)
    equalized = {"train.max_steps": equal_steps[arm.name]} if arm.name in equal_steps else {}  # stored apart
    return with_changes(spec.configs[arm.name], {**equalized, **changes})
