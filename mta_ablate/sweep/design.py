"""Designs: how a sweep file's `design` section becomes named arms (fixed designs) or a search space (search).

    ablation  a reference arm plus factors, each level changed one at a time from the reference (Table 5 style);
              the reference runs once per seed, not once per factor
    grid      the Cartesian product of the factors
    arms      an explicit list of named arms, each a mapping of overrides
    search    an Optuna sampler over typed ranges and choices, with conditional parameters

An arm is a mapping of overrides (`attention.qk_pre: [4, 9]`, `attention: mta_paper`) applied on top of the
sweep's base experiment. Arm names come from the overrides: `qk_pre=4x9`, `attention=mta_paper,lr=0.003`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from mta_ablate.errors import ConfigError
from mta_ablate.paths import check_name

DESIGNS = ("ablation", "grid", "arms", "search")
REFERENCE = "reference"


@dataclass(frozen=True)
class Arm:
    """One named configuration: overrides on top of the base experiment."""

    name: str
    overrides: dict[str, Any]
    factor: str = ""
    level: str = ""


def format_value(value: Any) -> str:
    """A short label: [4, 9] -> 4x9, 0.003 -> 0.003, None -> none, True -> true."""
    if isinstance(value, list | tuple):
        return "x".join(format_value(v) for v in value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def short_key(key: str, all_keys: list[str]) -> str:
    """`attention.qk_pre` -> `qk_pre` unless another key ends the same way."""
    last = key.rsplit(".", 1)[-1]
    return last if sum(k.rsplit(".", 1)[-1] == last for k in all_keys) == 1 else key


def arm_name(overrides: dict[str, Any], keys: list[str] | None = None) -> str:
    keys = keys or list(overrides)
    return ",".join(f"{short_key(k, keys)}={format_value(v)}" for k, v in overrides.items()) or REFERENCE


def _levels(design: dict, factor: str, levels: Any) -> list[tuple[str, dict[str, Any]]]:
    """A factor's levels as (label, overrides). A level is a value, or a mapping {label: {key: value, ...}} that
    changes several keys at once (e.g. a paper row)."""
    if isinstance(levels, dict):
        out = []
        for label, overrides in levels.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"design.factors.{factor}.{label}: expected a mapping of overrides")
            out.append((str(label), dict(overrides)))
        return out
    if not isinstance(levels, list) or not levels:
        raise ConfigError(f"design.factors.{factor}={levels!r}: expected a non-empty list of levels")
    return [(format_value(v), {factor: v}) for v in levels]


def expand(design: dict) -> list[Arm]:
    """The arms of a fixed design (ablation, grid, arms), names unique; raises ConfigError on a malformed design."""
    kind = design.get("kind")
    if kind not in DESIGNS:
        raise ConfigError(f"design.kind={kind!r}: allowed: {', '.join(DESIGNS)}")
    if kind == "search":
        raise ConfigError("design.kind='search' has no fixed arms; its trials are sampled")
    if kind == "arms":
        arms = _explicit_arms(design)
    else:
        factors = design.get("factors")
        if not isinstance(factors, dict) or not factors:
            raise ConfigError(f"design.factors={factors!r}: a {kind} design needs at least one factor with levels")
        arms = _grid(design, factors) if kind == "grid" else _ablation(design, factors)
    names = [a.name for a in arms]
    for name in names:
        check_name(name, "design: arm name")
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise ConfigError(f"design: two arms are both named {duplicate!r}; give levels distinct labels")
    if not arms:
        raise ConfigError("design: the design has no arms")
    return arms


def _explicit_arms(design: dict) -> list[Arm]:
    arms = design.get("arms")
    if not isinstance(arms, list) or not arms:
        raise ConfigError("design.arms: expected a non-empty list of {name: ..., overrides: {...}}")
    out = []
    for i, arm in enumerate(arms):
        if not isinstance(arm, dict) or not isinstance(arm.get("overrides", {}), dict):
            raise ConfigError(f"design.arms[{i}]: expected {{name: ..., overrides: {{key: value}}}}")
        overrides = dict(arm.get("overrides") or {})
        out.append(Arm(str(arm.get("name") or arm_name(overrides)), overrides))
    return out


def _grid(design: dict, factors: dict) -> list[Arm]:
    per_factor = [[(f, label, o) for label, o in _levels(design, f, levels)] for f, levels in factors.items()]
    keys = list(factors)
    arms = []
    for combo in itertools.product(*per_factor):
        overrides: dict[str, Any] = {}
        for _, _, o in combo:
            overrides.update(o)
        name = ",".join(f"{short_key(f, keys)}={label}" for f, label, _ in combo)
        arms.append(Arm(name, overrides))
    return arms


def _ablation(design: dict, factors: dict) -> list[Arm]:
    reference = design.get("reference", {})
    if not isinstance(reference, dict):
        raise ConfigError(f"design.reference={reference!r}: expected a mapping of overrides (may be empty)")
    arms = [Arm(str(design.get("reference_name", REFERENCE)), dict(reference), REFERENCE, REFERENCE)]
    keys = list(factors)
    for factor, levels in factors.items():
        for label, overrides in _levels(design, factor, levels):
            if all(reference.get(k, _MISSING) == v for k, v in overrides.items()):
                continue  # the reference level: already run, once per seed
            arms.append(Arm(f"{short_key(factor, keys)}={label}", {**reference, **overrides}, factor, label))
    return arms


_MISSING = object()


# -- search spaces ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchParam:
    """One searched override: float/int ranges (optionally log) or categorical choices, optionally conditional."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    when: dict[str, Any] = field(default_factory=dict)

    def suggest(self, trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        # categorical: Optuna stores primitives only; lists are stored as their labels and mapped back
        labels = [format_value(c) for c in self.choices]
        return self.choices[labels.index(trial.suggest_categorical(self.key, labels))]


PARAM_TYPES = ("float", "int", "categorical")
PARAM_KEYS = {"categorical": ("type", "choices", "when"), "range": ("type", "low", "high", "log", "step", "when")}


def search_space(design: dict) -> list[SearchParam]:
    params = design.get("params")
    if not isinstance(params, dict) or not params:
        raise ConfigError("design.params: a search design needs at least one parameter {key: {type: ..., ...}}")
    out = []
    for key, p in params.items():
        if not isinstance(p, dict) or p.get("type") not in PARAM_TYPES:
            raise ConfigError(f"design.params.{key}: expected type one of {', '.join(PARAM_TYPES)}")
        allowed = PARAM_KEYS["categorical" if p["type"] == "categorical" else "range"]
        unknown = sorted(set(map(str, p)) - set(allowed))
        if unknown:  # a misspelt `log` or `step` would otherwise be ignored
            raise ConfigError(f"design.params.{key}.{unknown[0]}: unknown key; allowed: {', '.join(allowed)}")
        when = p.get("when", {}) or {}
        if not isinstance(when, dict) or any(k not in params for k in when):
            raise ConfigError(f"design.params.{key}.when={when!r}: expected a mapping of other searched keys to values")
        if p["type"] == "categorical":
            choices = p.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"design.params.{key}.choices: expected a non-empty list")
            out.append(SearchParam(key, "categorical", choices=tuple(choices), when=dict(when)))
            continue
        low, high = p.get("low"), p.get("high")
        if not isinstance(low, int | float) or not isinstance(high, int | float) or not low < high:
            raise ConfigError(f"design.params.{key}: expected numbers low < high, got low={low!r} high={high!r}")
        if p.get("log") and low <= 0:
            raise ConfigError(f"design.params.{key}: log=true needs low > 0, got {low}")
        out.append(SearchParam(key, p["type"], low, high, bool(p.get("log", False)), p.get("step"), when=dict(when)))
    return out


def sample_overrides(space: list[SearchParam], trial) -> dict[str, Any]:
    """Suggest every parameter whose condition holds (in file order), returning the overrides of this trial."""
    chosen: dict[str, Any] = {}
    for param in space:
        if all(chosen.get(k, _MISSING) == v for k, v in param.when.items()):
            chosen[param.key] = param.suggest(trial)
    return chosen


# -- references: what each arm is compared with ---------------------------------------------------------------


def references(design: dict, arms: list[Arm], reference: Any = None) -> dict[str, str]:
    """arm -> the arm it is compared with (a reference maps to itself); {} when the design names no reference.

    ablation: the reference arm. arms: `reference` (an arm name), else an arm named `baseline`. grid: `reference` as
    {factor: level} (or `factor=level,...`): each arm is compared with the arm that has those levels and its own
    levels of the other factors, so a grid is compared within each level of its other factors."""
    names = [a.name for a in arms]
    kind = design.get("kind")
    if kind == "ablation":
        if reference is not None:
            raise ConfigError("sweep.seeds.reference: an ablation's reference is its design.reference arm; remove it")
        ref = next(a.name for a in arms if a.factor == REFERENCE)
        return dict.fromkeys(names, ref)
    if kind == "arms":
        ref = reference if reference is not None else ("baseline" if "baseline" in names else None)
        if ref is None:
            return {}
        if ref not in names:
            raise ConfigError(f"sweep.seeds.reference={ref!r}: not an arm; arms: {', '.join(names)}")
        return dict.fromkeys(names, ref)
    if kind != "grid" or reference is None:
        return {}
    return _within_levels(design, names, reference)


def _within_levels(design: dict, names: list[str], reference: Any) -> dict[str, str]:
    keys = list(design.get("factors") or {})
    if isinstance(reference, str):
        reference = dict(part.split("=", 1) for part in reference.split(",") if "=" in part)
    if not isinstance(reference, dict) or not reference:
        raise ConfigError(f"sweep.seeds.reference={reference!r}: a grid's reference is {{factor: level}}")
    want = {short_key(k, keys) if k in keys else k: format_value(v) for k, v in reference.items()}
    grid = {name: dict(part.split("=", 1) for part in name.split(",")) for name in names}
    factors = {k: sorted({lv[k] for lv in grid.values() if k in lv}) for k in grid[names[0]]}
    for k, v in want.items():
        if v not in factors.get(k, ()):
            allowed = "; ".join(f"{f}: {', '.join(levels)}" for f, levels in factors.items())
            raise ConfigError(f"sweep.seeds.reference: {k}={v} is not a level of this grid; allowed: {allowed}")
    by_levels = {tuple(sorted(lv.items())): name for name, lv in grid.items()}
    return {name: by_levels[tuple(sorted({**lv, **want}.items()))] for name, lv in grid.items()}
