"""`SweepSpec`: a sweep file (`sweeps/*.yaml`) read, checked and expanded, before any trial starts.

    name: kernel_sizes                 # the Optuna study and the MLflow experiment
    defaults: [{model: toy}, {attention: mta_toy}, {task: find_block}, {train: cpu_quick}]   # base experiment
    base: {train.max_steps: 600}       # more overrides of the base experiment
    seeds: [0, 1, 2]                   # every arm runs once per seed; or adaptive (seeds until decided):
    # seeds: {initial: 3, max: 10, alpha: 0.05, margin: null, reference: baseline}
    objective: {metric: toy/error, direction: minimize}
    budget: {max_trials: null, timeout_min: null}
    design: {kind: ablation, reference: {...}, factors: {attention.qk_pre: [[2, 3], [2, 7]]}}
    pruner: {kind: median, warmup_steps: 200}

Command-line overrides go to the experiment (`train.max_steps=50`), or to the sweep itself with a `sweep.` prefix
(`sweep.seeds=[0]`). Every arm's config is composed and validated once (`resolve.validate_configs`), so a bad level
fails in one line, exit 2. `parse.read_sweep_file` and `parse.parse_sweep` make one from a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mta_ablate.metrics import validation_key
from mta_ablate.sequential import SeedPolicy
from mta_ablate.sweep.design import Arm, SearchParam

PRUNERS = ("none", "median", "asha", "hyperband")
SAMPLERS = ("tpe", "random", "cmaes", "gp", "qmc")
KEYS = ("name", "defaults", "base", "seeds", "objective", "budget", "design", "pruner", "sampler", "heartbeat")
TESTS = ("t", "onset", "rate")
ONSET_KEY, CROSSED_KEY = "objective/onset_step", "objective/crossed"
NESTED = {
    "objective": ("metric", "direction", "test", "threshold"),
    "budget": ("max_trials", "timeout_min", "equalize"),
    "heartbeat": ("interval_s", "grace_s"),
}
PRUNER_KEYS = {
    "none": (),
    "median": ("warmup_steps", "startup_trials"),
    "asha": ("min_steps", "reduction_factor"),
    "hyperband": ("min_steps", "reduction_factor"),
}
DESIGN_KEYS = {
    "ablation": ("reference", "reference_name", "factors"),
    "grid": ("factors",),
    "arms": ("arms",),
    "search": ("params",),
}
GROUPS = ("model", "attention", "task", "train")


@dataclass(frozen=True)
class Pruner:
    """`pruner: {kind: median, warmup_steps: 200}` of a sweep file (`study.pruner_for` sizes it per trial)."""

    kind: Literal["none", "median", "asha", "hyperband"] = "none"
    warmup_steps: int = 0
    """median: validations before this step never prune."""
    startup_trials: int = 2
    """median: trials that finish before any is pruned."""
    min_steps: int | None = None
    """asha, hyperband: the first rung (None: an eighth of the trial's max_steps)."""
    reduction_factor: int = 3
    """asha, hyperband: how many times fewer trials each rung keeps."""


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: list[str]
    seeds: tuple[int, ...]
    metric: str
    direction: str
    kind: str
    """The design: ablation, grid, arms or search (its contents are expanded into `arms`, `space`, `reference_of`)."""
    arms: tuple[Arm, ...] = ()
    space: tuple[SearchParam, ...] = ()
    max_trials: int | None = None
    timeout_min: float | None = None
    pruner: Pruner = field(default_factory=lambda: Pruner())
    sampler: str = "tpe"
    heartbeat_s: int = 10
    grace_s: int = 30
    raw: dict = field(default_factory=dict)
    """The sweep file as read (plain data): stored with the study, compared on resume, logged as sweep.yaml."""
    policy: SeedPolicy | None = None
    """Seeds until decided (`seeds: {initial, max, ...}`); None for a fixed list of seeds."""
    reference_of: dict[str, str] = field(default_factory=dict)
    """arm -> the arm it is compared with (itself for a reference); empty when the design has no reference."""
    test: str = "t"
    """What decides a comparison: t (the paired t-test on the objective), onset (the step at which each seed's
    validation metric first crosses `threshold`), rate (whether each seed's final objective crosses it)."""
    threshold: float | None = None
    """The level an `onset` or `rate` objective crosses (below it when the metric is minimized, above otherwise)."""
    equalize: str | None = None
    """`budget.equalize`: flops or time: each arm's max_steps is set so that its training FLOPs (or its wall time, from
    step times measured side by side when the sweep is created) match its reference's."""
    configs: dict = field(default_factory=dict, compare=False, repr=False)
    """arm -> its experiment config (`ExperimentConfig`, at the first seed), composed once by validation or rebuilt
    from the stored sweep without Hydra; for a search, the base experiment under the key ""."""

    @property
    def reference(self) -> str:
        """The reference arm's name when one arm is every arm's reference, else "" (a grid compares within levels)."""
        refs = set(self.reference_of.values())
        return refs.pop() if len(refs) == 1 else ""

    @property
    def all_seeds(self) -> tuple[int, ...]:
        """Every seed a trial may get: the fixed list, or 0 .. max-1 of an adaptive policy."""
        return tuple(range(self.policy.max)) if self.policy else self.seeds

    @property
    def objective_key(self) -> str:
        """The value a trial hands to Optuna and the statistics: the metric itself, or the onset step / crossing it
        is reduced to (logged on the trial's run under this key)."""
        return {"t": self.metric, "onset": ONSET_KEY, "rate": CROSSED_KEY}[self.test]

    @property
    def value_direction(self) -> str:
        """The better way of `objective_key`: the metric's own, an earlier onset, more crossings."""
        return {"t": self.direction, "onset": "minimize", "rate": "maximize"}[self.test]

    @property
    def report_metric(self) -> str:
        """What the trial reports at every validation, for pruning."""
        return validation_key(self.metric, other=self.metric)

    def slots(self) -> list[tuple[Arm, int]]:
        """Every (arm, seed) of a fixed design, each to complete exactly once."""
        return [(arm, seed) for arm in self.arms for seed in self.seeds]

    def experiment_overrides(self, arm_overrides: dict[str, Any], seed: int, extra: list[str] = ()) -> list[str]:
        return [*self.base, *(to_override(k, v) for k, v in arm_overrides.items()), *extra, f"seed={seed}"]

    def to_dict(self) -> dict:
        return self.raw

    @property
    def first_config(self):
        """The config of the first arm (of the base experiment for a search): what every trial shares, such as the
        accelerator and the thread count, is read from it."""
        return next(iter(self.configs.values()))


def to_override(key: str, value: Any) -> str:
    """A Hydra override string for a plain value: lists -> [a,b], None -> null, bool -> true/false."""

    def fmt(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ",".join(fmt(x) for x in v) + "]"
        if v is None:
            return "null"
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str) and any(c in v for c in " ,[]{}()='\""):
            return "'" + v.replace("'", "\\'") + "'"
        return str(v)

    return f"{key}={fmt(value)}"
