"""A sweep file read and checked into a `SweepSpec`: every key at every level, every value with the key, the value and
what is allowed, before any trial starts.

    data = read_sweep_file("sweeps/kernel_sizes.yaml", overrides)   # plain data, `sweep.` overrides applied
    spec = parse_sweep(data, overrides)                              # checked, expanded, every arm validated
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from mta_ablate.errors import ConfigError
from mta_ablate.paths import check_name
from mta_ablate.sequential import RULES, SeedPolicy
from mta_ablate.sweep.design import expand, references, search_space
from mta_ablate.sweep.resolve import validate_configs
from mta_ablate.sweep.spec import (
    DESIGN_KEYS,
    GROUPS,
    KEYS,
    NESTED,
    PRUNER_KEYS,
    PRUNERS,
    SAMPLERS,
    TESTS,
    Pruner,
    SweepSpec,
    to_override,
)
from mta_ablate.typed import from_dict


def read_sweep_file(path: str | Path, overrides: list[str] = ()) -> dict:
    """The sweep file as plain data, with `sweep.`-prefixed overrides applied (OmegaConf dot-list)."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"sweep file {str(path)!r} is a folder; expected a YAML file such as sweeps/quickstart.yaml")
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"sweep file {path}: not a text YAML file (it is not UTF-8 text)") from None
    if "\x00" in text:
        raise ConfigError(f"sweep file {path}: not a text YAML file (it holds NUL bytes)")
    if "${" in text and "oc.env" in text:
        raise ConfigError(
            f"sweep file {path}: ${{oc.env:...}} is not allowed (its value would be stored with the sweep)"
        )
    try:
        conf = OmegaConf.create(yaml.safe_load(text) or {})
        own = [o.removeprefix("sweep.") for o in overrides if o.startswith("sweep.")]
        if own:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(own))
        data = OmegaConf.to_container(conf, resolve=True)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"sweep file {path}: not valid YAML{where}: {problem}") from None
    except (OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(f"sweep file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping at the top level")
    data.setdefault("name", path.stem)
    return data


def parse_sweep(data: dict, overrides: list[str] = (), validate: bool = True) -> SweepSpec:
    """Check a sweep's plain data, expand its design and (by default) validate every arm's experiment config."""
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(f"sweep.{unknown[0]}: unknown key; allowed: {', '.join(KEYS)}")
    _check_nested_keys(data)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"sweep.name={name!r}: expected a non-empty name")
    check_name(name, "sweep.name")
    base = _base_overrides(data.get("defaults") or [], data.get("base") or {})
    seeds, policy, reference = _seeds(data.get("seeds", [0]))
    objective = data.get("objective") or {}
    metric, direction = objective.get("metric"), objective.get("direction", "minimize")
    if not isinstance(metric, str) or "/" not in metric:
        raise ConfigError(f"sweep.objective.metric={metric!r}: expected a metric key such as val/ppl or toy/error")
    if direction not in ("minimize", "maximize"):
        raise ConfigError(f"sweep.objective.direction={direction!r}: allowed: minimize, maximize")
    test, threshold = _test(objective, policy, data.get("pruner") or {}, (data.get("budget") or {}).get("equalize"))
    design = data.get("design")
    if not isinstance(design, dict):
        raise ConfigError("sweep.design: missing; expected {kind: ablation|grid|arms|search, ...}")
    options = _options(data)
    max_trials, timeout, equalize = options["max_trials"], options["timeout_min"], options["equalize"]
    if design.get("kind") == "search":
        arms, space = (), tuple(search_space(design))
        if max_trials is None and timeout is None:
            raise ConfigError("sweep.budget: a search design needs max_trials or timeout_min")
        if policy or equalize:
            raise ConfigError("sweep.seeds / sweep.budget.equalize: adaptive seeds and equal compute need fixed arms")
    else:
        arms, space = tuple(expand(design)), ()
    reference_of = references(design, list(arms), reference)
    if (policy or equalize) and not reference_of:
        raise ConfigError(
            "sweep.seeds.reference: adaptive seeds and equal compute compare arms with a reference; name it "
            "(an arm of an arms design, or {factor: level} of a grid)"
        )
    spec = SweepSpec(
        name=name,
        base=[*base, *(o for o in overrides if not o.startswith("sweep."))],
        seeds=tuple(seeds),
        metric=metric,
        direction=direction,
        kind=design["kind"],
        arms=arms,
        space=space,
        **options,
        raw=data,
        policy=policy,
        test=test,
        threshold=threshold,
        reference_of=reference_of,
    )
    if not validate:
        return spec
    return replace(spec, configs=validate_configs(spec))


def _test(objective: dict, policy: SeedPolicy | None, pruner: dict, equalize) -> tuple[str, float | None]:
    """(test, threshold) of a sweep's objective, checked: onset and rate need a finite threshold, decide by an exact
    sign test (no equivalence margin) and train every trial to its end (no pruner); onset compares steps, so the
    arms of a pair must train the same number of them (no budget.equalize)."""
    test, threshold = objective.get("test", "t"), objective.get("threshold")
    if test not in TESTS:
        raise ConfigError(f"sweep.objective.test={test!r}: allowed: {', '.join(TESTS)}")
    if test == "t":
        if threshold is not None:
            raise ConfigError("sweep.objective.threshold: only for test: onset or rate")
        return test, None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not math.isfinite(threshold):
        raise ConfigError(f"sweep.objective.threshold={threshold!r}: test: {test} needs a finite number to cross")
    if policy is None:
        raise ConfigError(f"sweep.seeds: test: {test} decides with seeds until decided; give seeds: {{initial, max}}")
    if policy.margin is not None:
        raise ConfigError(f"sweep.seeds.margin: test: {test} decides better or worse only; set margin: null")
    if (pruner or {}).get("kind", "none") != "none":
        raise ConfigError(f"sweep.pruner: test: {test} needs every trial trained to its end; use kind: none")
    if test == "onset" and equalize:
        raise ConfigError("sweep.budget.equalize: test: onset compares steps, so every arm trains as many; remove it")
    return test, float(threshold)


def _known(mapping: Any, allowed: tuple[str, ...], where: str) -> None:
    """Every key of `mapping` (when it is a mapping) is one of `allowed`, or one line naming it and what is."""
    if not isinstance(mapping, dict):
        return
    unknown = sorted(set(map(str, mapping)) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; allowed: {', '.join(allowed) or '(none)'}")


def _check_nested_keys(data: dict) -> None:
    """The keys below the top level of a sweep file: a misspelt one (`objective: {directon: maximize}`) would
    otherwise be ignored and its default used."""
    for key, allowed in NESTED.items():
        _known(data.get(key), allowed, f"sweep.{key}")
    pruner = data.get("pruner")
    if isinstance(pruner, dict) and pruner.get("kind", "none") in PRUNER_KEYS:
        _known(pruner, ("kind", *PRUNER_KEYS[pruner.get("kind", "none")]), f"sweep.pruner (kind {pruner.get('kind')})")
    design = data.get("design")
    if isinstance(design, dict) and design.get("kind") in DESIGN_KEYS:
        _known(design, ("kind", *DESIGN_KEYS[design["kind"]]), f"sweep.design (kind {design['kind']})")
        for i, arm in enumerate(design.get("arms") or [] if design["kind"] == "arms" else []):
            _known(arm, ("name", "overrides"), f"sweep.design.arms[{i}]")


def _options(data: dict) -> dict[str, Any]:
    """The checked budget, pruner, sampler and heartbeat of a sweep, as `SweepSpec` fields."""
    budget = data.get("budget") or {}
    max_trials, timeout = budget.get("max_trials"), budget.get("timeout_min")
    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
        raise ConfigError(f"sweep.budget.max_trials={max_trials!r}: expected an integer >= 1 or null")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise ConfigError(f"sweep.budget.timeout_min={timeout!r}: expected minutes > 0 or null")
    equalize = budget.get("equalize")
    if equalize not in (None, "flops", "time"):
        raise ConfigError(f"sweep.budget.equalize={equalize!r}: allowed: flops, time, or null (equal steps)")
    pruner = data.get("pruner") or {"kind": "none"}
    if not isinstance(pruner, dict) or pruner.get("kind", "none") not in PRUNERS:
        raise ConfigError(f"sweep.pruner={pruner!r}: kind must be one of {', '.join(PRUNERS)}")
    sampler = data.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sweep.sampler={sampler!r}: allowed: {', '.join(SAMPLERS)}")
    heartbeat = data.get("heartbeat") or {}
    interval, grace = heartbeat.get("interval_s", 10), heartbeat.get("grace_s", 30)
    if not (isinstance(interval, int) and isinstance(grace, int) and 1 <= interval < grace):
        raise ConfigError(f"sweep.heartbeat={heartbeat!r}: expected integers 1 <= interval_s < grace_s")
    return {
        "max_trials": max_trials,
        "timeout_min": timeout,
        "equalize": equalize,
        "pruner": from_dict(Pruner, {k: _whole(v) for k, v in pruner.items()}, "sweep.pruner"),
        "sampler": sampler,
        "heartbeat_s": interval,
        "grace_s": grace,
    }


def _whole(value: Any) -> Any:
    """3.0 -> 3: a whole number written as a float is read as the integer it is."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


SEED_KEYS = ("initial", "max", "alpha", "margin", "reference", "rule")


def _seeds(seeds: Any) -> tuple[list[int], SeedPolicy | None, Any]:
    """(seeds to queue first, adaptive policy or None, reference) from a list or {initial, max, alpha, ...}."""
    if isinstance(seeds, dict):
        unknown = sorted(set(seeds) - set(SEED_KEYS))
        if unknown:
            raise ConfigError(f"sweep.seeds.{unknown[0]}: unknown key; allowed: {', '.join(SEED_KEYS)}")
        initial, most = seeds.get("initial", 3), seeds.get("max", 10)
        alpha, margin = seeds.get("alpha", 0.05), seeds.get("margin")
        if not (isinstance(initial, int) and isinstance(most, int) and 2 <= initial <= most <= 100):
            raise ConfigError(f"sweep.seeds={seeds!r}: expected integers 2 <= initial <= max <= 100")
        if not isinstance(alpha, int | float) or not 0 < alpha < 0.5:
            raise ConfigError(f"sweep.seeds.alpha={alpha!r}: expected a level in (0, 0.5)")
        if margin is not None and (not isinstance(margin, int | float) or margin <= 0):
            raise ConfigError(f"sweep.seeds.margin={margin!r}: expected a positive number (objective units) or null")
        rule = seeds.get("rule", "calibrated")
        if rule not in RULES:
            raise ConfigError(f"sweep.seeds.rule={rule!r}: allowed: {', '.join(RULES)}")
        policy = SeedPolicy(initial, most, float(alpha), float(margin) if margin is not None else None, rule)
        return list(range(initial)), policy, seeds.get("reference")
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(
            f"sweep.seeds={seeds!r}: expected a non-empty list of integers >= 0, or {{initial: 3, max: 10}}"
        )
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep.seeds={seeds!r}: a seed is listed twice")
    return seeds, None, None


def _base_overrides(defaults: list, base: dict) -> list[str]:
    out = []
    for item in defaults:
        if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in GROUPS:
            raise ConfigError(
                f"sweep.defaults: {item!r}: expected one-key mappings like {{model: toy}} over {', '.join(GROUPS)}"
            )
        ((group, option),) = item.items()
        out.append(f"{group}={option}")
    if not isinstance(base, dict):
        raise ConfigError(f"sweep.base={base!r}: expected a mapping of experiment overrides")
    return out + [to_override(k, v) for k, v in base.items()]
