"""Load one sweep from the MLflow tracking store into polars: one row per trial, nothing dropped.

    sweep = load_sweep("kernel_sizes")            # store: tracking_uri() (MTA_HOME or MLFLOW_TRACKING_URI)
    sweep.trials                                  # pl.DataFrame, one row per child run (every state)
    sweep.complete()                              # only the trials the statistics use
    load_histories(sweep, ["val/ppl"])            # long frame of metric histories by global step

`trials` columns (documented order; metric and param columns follow):
    run_id str, trial int (Optuna number, null if untagged), arm str, seed int, factor str, level str,
    state str (running | complete | pruned | failed), status str (MLflow: RUNNING | FINISHED | KILLED | FAILED),
    failure str (the `mta.failure` reason, "" if none), start_time datetime, duration_s float (null while running),
    then every metric's last logged value as a float column named by its key (`final/ppl`, `toy/error`,
    `needle/ctx64/k1/depth0-50/exact`, `perf/tokens_per_s`, ...), then every param as a str column named
    `param:<key>` (`param:model.dim`, `param:model/params/mta`, ...).

Reads only the tracking store (conventions in `mta_ablate.tracking.mlflow_store`); never loads a model.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import polars as pl

from mta_ablate.errors import ConfigError
from mta_ablate.trialkeys import PER_TRIAL_KEYS

log = logging.getLogger(__name__)

# Tag keys, as written by mta_ablate.sweep (see the sweep conventions at the end of mta_ablate.tracking.mlflow_store,
# which imports neither torch nor the data layer).
from mta_ablate.tracking.mlflow_store import (  # noqa: E402
    KIND_SWEEP,
    KIND_TRIAL,
    PARENT_TAG,
    STATES,
    TAG_ARM,
    TAG_DESIGN,
    TAG_DIRECTION,
    TAG_FACTOR,
    TAG_FAILURE,
    TAG_KIND,
    TAG_LEVEL,
    TAG_OBJECTIVE,
    TAG_REFERENCE,
    TAG_SEED,
    TAG_STATE,
    TAG_STORAGE,
    TAG_TEST,
    TAG_TRIAL,
)

_STATE_FROM_STATUS = {"RUNNING": "running", "SCHEDULED": "running", "FINISHED": "complete", "KILLED": "pruned"}
BASE_COLUMNS = ("run_id", "trial", "arm", "seed", "factor", "level", "state", "status", "failure")
PARAM_PREFIX = "param:"


@dataclass(frozen=True)
class Sweep:
    """A sweep as the tracking store holds it: the parent run's tags and one row per trial."""

    name: str
    experiment_id: str
    parent_run_id: str | None
    parent_status: str | None
    """MLflow status of the parent run (RUNNING while the sweep is in progress); None if there is no parent."""
    design: str
    reference: str
    """The ablation design's reference arm ("" for other designs)."""
    objective: str
    direction: str
    storage: str
    trials: pl.DataFrame
    tracking_uri: str
    metric_keys: tuple[str, ...] = field(default=())
    policy: dict | None = None
    """The sweep's seeds-until-decided rule ({initial, max, alpha, margin}), None for fixed seeds."""
    test: str = "t"
    """What decides: `t`, or `onset METRIC THRESHOLD` / `rate METRIC THRESHOLD` (an exact sign test on the objective,
    which is then the onset step or the crossing)."""
    references: dict = field(default_factory=dict)
    """arm -> the arm the sweep compares it with (a reference maps to itself), as the sweep file named them."""
    pooled: tuple[str, ...] = ()
    """The other sweeps whose trials were pooled into this one (`pool`); their trials carry a `sweep` column."""

    def complete(self) -> pl.DataFrame:
        """The complete trials, one per (arm, seed): a retried seed keeps its latest complete run."""
        done = self.trials.filter(pl.col("state") == "complete")
        return done.sort("start_time").unique(subset=["arm", "seed"], keep="last", maintain_order=True)

    def counts(self) -> dict[str, int]:
        """Trials per state, every state present (0 when none)."""
        found = dict(self.trials.group_by("state").len().iter_rows())
        return {state: int(found.get(state, 0)) for state in STATES} | {
            k: int(v) for k, v in found.items() if k not in STATES
        }

    @property
    def running(self) -> bool:
        return self.parent_status == "RUNNING" or self.counts()["running"] > 0

    def arms(self) -> list[str]:
        """Arm names, the reference first, then in order of first appearance (trial number)."""
        arms = list(dict.fromkeys(self.trials.sort("trial", nulls_last=True)["arm"].to_list()))
        if self.reference in arms:
            arms.remove(self.reference)
            arms.insert(0, self.reference)
        return arms


def open_client(uri: str | None):
    """MlflowClient on the configured store; `uri` None means the project's default (tracking_uri())."""
    from mta_ablate.tracking.mlflow_store import client, tracking_uri

    return client(uri), tracking_uri(uri)


def _search_all(mlflow_client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = mlflow_client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text not in (None, "") else None
    except ValueError:
        return None


def _trial_row(run) -> dict:
    tags, info = run.data.tags, run.info
    state = tags.get(TAG_STATE) or _STATE_FROM_STATUS.get(info.status, "failed")
    start = datetime.fromtimestamp(info.start_time / 1000, tz=UTC) if info.start_time else None
    duration = (info.end_time - info.start_time) / 1000 if info.end_time and info.start_time else None
    row = {
        "run_id": info.run_id,
        "trial": _int_or_none(tags.get(TAG_TRIAL)),
        "arm": tags.get(TAG_ARM, ""),
        "seed": _int_or_none(tags.get(TAG_SEED)),
        "factor": tags.get(TAG_FACTOR, ""),
        "level": tags.get(TAG_LEVEL, ""),
        "state": state,
        "status": info.status,
        "failure": tags.get(TAG_FAILURE, ""),
        "start_time": start,
        "duration_s": duration,
    }
    row.update({k: float(v) for k, v in run.data.metrics.items()})
    row.update({f"{PARAM_PREFIX}{k}": v for k, v in run.data.params.items()})
    return row


def trials_frame(runs: list) -> pl.DataFrame:
    """One row per MLflow run (child runs of a sweep); columns as in the module docstring."""
    rows = [_trial_row(r) for r in runs]
    if not rows:
        schema = {c: pl.String for c in BASE_COLUMNS} | {"trial": pl.Int64, "seed": pl.Int64}
        return pl.DataFrame(schema=schema | {"start_time": pl.Datetime("us", "UTC"), "duration_s": pl.Float64})
    metric_keys = sorted({k for r in runs for k in r.data.metrics})
    param_keys = sorted({f"{PARAM_PREFIX}{k}" for r in runs for k in r.data.params})
    base = [*BASE_COLUMNS, "start_time", "duration_s"]
    schema = {c: pl.String for c in BASE_COLUMNS} | {"trial": pl.Int64, "seed": pl.Int64}
    schema |= {"start_time": pl.Datetime("us", "UTC"), "duration_s": pl.Float64}
    schema |= {k: pl.Float64 for k in metric_keys} | {k: pl.String for k in param_keys}
    frame = pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema, orient="row")
    return frame.select(base + metric_keys + param_keys).sort("trial", "arm", "seed", nulls_last=True)


def load_sweep(name: str, uri: str | None = None) -> Sweep:
    """Read sweep `name` (the experiment of that name) from the store. ConfigError if there is no such sweep."""
    mlflow_client, resolved_uri = open_client(uri)
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        known = sorted(e.name for e in mlflow_client.search_experiments() if e.name != "Default")
        raise ConfigError(f"sweep {name!r}: no such experiment in {resolved_uri}; known: {known or 'none'}")
    exp_id = experiment.experiment_id
    parents = _search_all(mlflow_client, exp_id, f"tags.`{TAG_KIND}` = '{KIND_SWEEP}'")
    parents.sort(key=lambda r: r.info.start_time or 0)
    parent = parents[-1] if parents else None
    if len(parents) > 1:
        log.warning("sweep %s has %d parent runs; using the latest (%s)", name, len(parents), parent.info.run_id)
    children = _search_all(mlflow_client, exp_id, f"tags.`{TAG_KIND}` = '{KIND_TRIAL}'")
    if parent is not None:
        children = [r for r in children if r.data.tags.get(PARENT_TAG) in (None, parent.info.run_id)]
    tags = parent.data.tags if parent is not None else {}
    params = parent.data.params if parent is not None else {}
    trials = trials_frame(children)
    if parent is None:
        log.warning("sweep %s has no parent run (tag %s=%s); reading its trials only", name, TAG_KIND, KIND_SWEEP)
    return Sweep(
        name=name,
        experiment_id=exp_id,
        parent_run_id=parent.info.run_id if parent is not None else None,
        parent_status=parent.info.status if parent is not None else None,
        design=tags.get(TAG_DESIGN, ""),
        reference=tags.get(TAG_REFERENCE, ""),
        objective=tags.get(TAG_OBJECTIVE, ""),
        direction=tags.get(TAG_DIRECTION, "minimize"),
        test=tags.get(TAG_TEST, "t"),
        storage=tags.get(TAG_STORAGE, ""),
        trials=trials,
        tracking_uri=resolved_uri,
        metric_keys=tuple(sorted({k for r in children for k in r.data.metrics})),
        policy=json.loads(params.get("sweep.seed_policy") or "null"),
        references=json.loads(params.get("sweep.references") or "{}"),
    )


PER_TRIAL_PARAMS = PER_TRIAL_KEYS  # differ between the trials of one arm by design: pooling compares every other param


def pool(sweeps: list[Sweep]) -> Sweep:
    """The trials of several sweeps of one experiment read as one sweep: seeds (or arms) run in batches under other
    names. The first sweep gives the name, design, reference and parent run (where a report is logged); seeds-until-
    decided state is dropped (the pooled seeds are a fixed set). ConfigError, before anything is read further, when
    the sweeps are in different stores or have different objectives, when an arm ran with a different config in
    two of them (seed and run names aside), or when one (arm, seed) completed in two of them."""
    first, others = sweeps[0], sweeps[1:]
    if not others:
        return first
    names = [s.name for s in sweeps]
    if len(set(names)) < len(names):
        raise ConfigError(f"pooling sweeps {', '.join(names)}: a sweep is named twice")
    for s in others:
        if s.tracking_uri != first.tracking_uri:
            raise ConfigError(f"pooling sweep {s.name!r} into {first.name!r}: they are in different stores")
        if (s.objective, s.direction) != (first.objective, first.direction):
            raise ConfigError(
                f"pooling sweep {s.name!r} into {first.name!r}: objective {s.objective} ({s.direction}) is not "
                f"{first.objective} ({first.direction}); only sweeps of one experiment can be pooled"
            )
    configs: dict[str, tuple[str, dict]] = {}
    seen: dict[tuple[str, int], str] = {}
    skip = {f"{PARAM_PREFIX}{k}" for k in PER_TRIAL_PARAMS}
    for s in sweeps:
        done = s.complete()
        params = [c for c in done.columns if c.startswith(PARAM_PREFIX) and c not in skip]
        for row in done.iter_rows(named=True):
            config = {c[len(PARAM_PREFIX) :]: row[c] for c in params if row[c] is not None}
            arm, seed = row["arm"], row["seed"]
            if (arm, seed) in seen and seen[arm, seed] != s.name:
                raise ConfigError(
                    f"pooling sweeps: arm {arm!r} seed {seed} completed in both {seen[arm, seed]!r} and {s.name!r}; "
                    "pool sweeps whose seeds (or arms) do not overlap"
                )
            seen[arm, seed] = s.name
            where, before = configs.setdefault(arm, (s.name, config))
            differ = sorted(k for k in before.keys() | config.keys() if before.get(k) != config.get(k))
            if differ:
                k = differ[0]
                raise ConfigError(
                    f"pooling sweeps: arm {arm!r} ran with {k}={before.get(k)} in {where!r} but {k}={config.get(k)} "
                    f"in {s.name!r}; only the seeds (and arms) may differ between pooled sweeps"
                )
    trials = pl.concat(
        [s.trials.with_columns(pl.lit(s.name).alias("sweep")) for s in sweeps], how="diagonal_relaxed"
    ).sort("trial", "arm", "seed", nulls_last=True)
    running = any(s.parent_status == "RUNNING" for s in sweeps)
    return replace(
        first,
        parent_status="RUNNING" if running else first.parent_status,
        trials=trials,
        metric_keys=tuple(sorted({k for s in sweeps for k in s.metric_keys})),
        policy=None,
        references={k: v for s in reversed(sweeps) for k, v in s.references.items()},
        pooled=tuple(names[1:]),
    )


def load_histories(sweep: Sweep, keys: list[str], uri: str | None = None) -> pl.DataFrame:
    """Metric histories of every trial (any state) for `keys`.

    Returns a long frame: run_id str, arm str, seed int, state str, key str, step int (global step), value float.
    """
    mlflow_client, _ = open_client(uri or sweep.tracking_uri)
    rows = []
    wanted = [k for k in keys if k in sweep.metric_keys]
    for run_id, arm, seed, state in sweep.trials.select("run_id", "arm", "seed", "state").iter_rows():
        for key in wanted:
            for m in mlflow_client.get_metric_history(run_id, key):
                rows.append((run_id, arm, seed, state, key, int(m.step), float(m.value)))
    schema = {"run_id": pl.String, "arm": pl.String, "seed": pl.Int64, "state": pl.String}
    schema |= {"key": pl.String, "step": pl.Int64, "value": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row").sort("key", "arm", "seed", "step")


def download_artifact(sweep: Sweep, run_id: str, path: str, dst: str, uri: str | None = None) -> str | None:
    """Download one artifact of a run into directory `dst`; None when the run has no such artifact."""
    mlflow_client, _ = open_client(uri or sweep.tracking_uri)
    try:
        names = {a.path for a in mlflow_client.list_artifacts(run_id)}
        if path not in names:
            return None
        return mlflow_client.download_artifacts(run_id, path, dst)
    except Exception as exc:  # an unreachable artifact store must not stop the report
        log.warning("could not download %s of run %s: %s", path, run_id, exc)
        return None
