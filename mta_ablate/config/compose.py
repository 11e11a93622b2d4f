"""Compose an experiment from the packaged Hydra groups (`mta_ablate/conf/`) plus command-line overrides.

    load_experiment(["model=toy", "attention=mta_toy", "task=find_block", "train.max_steps=2000", "seed=1"])

Layers, lowest first: dataclass defaults < packaged YAML groups < overrides. Every Hydra error (unknown group
option, unknown key, unparsable override) becomes one `ConfigError` line naming the key and what is allowed.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from mta_ablate.config.schema import ExperimentConfig, experiment_from_dict
from mta_ablate.errors import ConfigError

GROUPS = ("model", "attention", "task", "train")


def group_options(group: str) -> list[str]:
    """Names of the packaged YAML files of a config group."""
    folder = resources.files("mta_ablate.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def compose_dict(overrides: list[str] | None = None, config_name: str = "config") -> tuple[dict[str, Any], dict]:
    """Hydra-compose the packaged config; returns (plain resolved dict, chosen group options)."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    _check_overrides(list(overrides or []))
    overrides = [_force(o) for o in overrides or []]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="mta_ablate.conf", version_base=None):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
            choices = dict(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                cfg.pop("hydra")
            return OmegaConf.to_container(cfg, resolve=True), choices
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_hydra_message(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def load_experiment(overrides: list[str] | None = None, arm: str | None = None) -> ExperimentConfig:
    """Compose and validate. The arm label (unless given) is the attention option plus any attention.* overrides."""
    values, choices = compose_dict(overrides)
    if arm is not None:
        return experiment_from_dict(values, arm=arm)
    tweaks = [o.split("=", 1) for o in overrides or [] if o.lstrip("+~").startswith("attention.")]
    arm = choices.get("attention", "custom")
    if tweaks:
        arm += "," + ",".join(f"{k.split('.', 1)[1]}={v}" for k, v in tweaks)
    return experiment_from_dict(values, arm=arm)


def _force(override: str) -> str:
    """`train.lr=1e-3` -> `++train.lr=1e-3`: set the key whether or not the chosen YAML mentions it. Keys that do
    not exist in the schema are then reported by validation, with the list of allowed keys."""
    key = override.partition("=")[0]
    if key.startswith(("+", "~")) or key in GROUPS:
        return override
    return "++" + override


def _check_overrides(overrides: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for item in overrides:
        key, sep, value = item.lstrip("+").partition("=")
        if not sep:
            raise ConfigError(f"{item!r}: expected key=value (e.g. train.max_steps=100 or model=tiny)")
        if "${" in value:
            raise ConfigError(f"{key}: interpolations such as ${{oc.env:...}} are not allowed; give the value itself")
        try:
            parser.parse_overrides([item])
        except HydraException as exc:
            raise ConfigError(f"{item!r}: cannot parse the value ({str(exc).splitlines()[0]})") from None
        if key in GROUPS and value not in group_options(key):
            raise ConfigError(f"{key}={value}: unknown option; allowed: {', '.join(group_options(key))}")


def _hydra_message(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0]
    match = re.search(r"Key '([^']+)' is not in struct", str(exc))
    override = re.search(r"Could not override '([^']+)'", str(exc))
    if match and override:
        key = override.group(1)
        section = key.split(".")[0]
        return f"{key}: unknown key in {section}; see `mta-ablate train --show-config` for the keys that exist"
    return text
