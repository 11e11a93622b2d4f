"""One trial of a sweep, as Optuna's objective: claim the trial's (arm, seed), make its config from its arm's, train it
with `run_trial`, and hand back the sweep's objective (the metric, or the onset step or crossing it is reduced to).

    objective = make_objective(spec, study, tracking_uri, parent, threads, worker)   # study.optimize(objective, ...)
"""

from __future__ import annotations

import contextlib
import json
import logging
import time

import optuna

from mta_ablate.ranks import RankLost
from mta_ablate.sweep import slots
from mta_ablate.sweep import study as sweep_study
from mta_ablate.sweep.design import Arm, arm_name, sample_overrides
from mta_ablate.sweep.resolve import trial_config
from mta_ablate.sweep.spec import SweepSpec
from mta_ablate.tracking import mlflow_store as store
from mta_ablate.trial import run_trial
from mta_ablate.trialkeys import PER_TRIAL_KEYS

log = logging.getLogger(__name__)


def _skip(trial, reason: str):
    """Record a trial that found nothing to do as skipped (pruned, no MLflow run); reports and queues ignore it."""
    trial.set_user_attr(slots.SKIPPED, reason)
    raise optuna.TrialPruned(reason)


def _find_duplicate(study, trial, arm: str, seed: int):
    """A finished trial of the same (arm, seed), or a running one that came first (so that of two trials popped at
    once for one (arm, seed), exactly one runs)."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)):
        if other.number == trial.number or other.user_attrs.get(slots.SKIPPED):
            continue
        if slots.slot_of(other) != (arm, seed):
            continue
        if other.state != TrialState.RUNNING or other.number < trial.number:
            return other
    return None


def close_orphaned_runs(
    tracking_uri: str | None, sweep: str, arm: str, seed: int, keep: str, recorded: frozenset[str] = frozenset()
) -> None:
    """Mark FAILED every other MLflow run of this (arm, seed) that no recorded trial owns: RUNNING ones (their worker
    died), and FINISHED ones whose worker died after MLflow closed the run and before Optuna recorded the trial
    (`recorded`: the run ids of the study's complete and pruned trials). One finished run per finished slot."""
    client = store.client(tracking_uri)
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        return
    query = (
        f"tags.`{store.TAG_ARM}` = '{arm}' AND tags.`{store.TAG_SEED}` = '{seed}' "
        f"AND tags.`{store.TAG_KIND}` = '{store.KIND_TRIAL}'"
    )
    for run in client.search_runs([experiment.experiment_id], query):
        if run.info.run_id == keep or run.info.run_id in recorded or run.info.status not in ("RUNNING", "FINISHED"):
            continue
        when = "worker died" if run.info.status == "RUNNING" else "worker died before its trial was recorded"
        store.retried(client.set_tag, run.info.run_id, store.TAG_STATE, "failed")
        store.retried(client.set_tag, run.info.run_id, store.TAG_FAILURE, f"{when}; trial rerun as MLflow run {keep}")
        store.retried(client.set_terminated, run.info.run_id, "FAILED")


def make_objective(
    spec: SweepSpec, study, tracking_uri: str | None, parent: str | None, threads: int, worker: str, leader=None
):
    """The Optuna objective of this worker: claim the trial's (arm, seed), train it with `run_trial`, return the
    objective; a failure is recorded on the trial (interrupted, lost rank or error) and re-raised."""
    equal_steps = json.loads(study.user_attrs.get(sweep_study.ATTR_STEPS, "{}"))
    threads = threads if spec.first_config.train.threads == 0 else 0  # a config that fixes its threads keeps them

    def objective(trial) -> float:
        with _failure_recorded(trial):
            started = time.time()
            arm, seed = _claim(spec, study, trial, worker)
            log.info("trial %d arm=%s seed=%s running", trial.number, arm.name, seed)
            config = trial_config(spec, arm, _trial_changes(spec, trial, arm, seed, threads), equal_steps)
            study.pruner = sweep_study.pruner_for(spec, config.train.max_steps)  # this trial's own scale
            result = run_trial(
                config,
                reporter=_pruning_reporter(spec, trial),
                parent_run_id=parent,
                tags=_trial_tags(spec, trial, arm),
                tracking_uri=tracking_uri,
                on_start=lambda run_id: _started(trial, tracking_uri, spec.name, arm.name, seed, run_id),
                leader=leader,
            )
            work = result.timings["fit_s"] + result.timings["evaluate_s"]
            trial.set_user_attr("overhead_s", round(time.time() - started - work, 3))
            trial.set_user_attr("steps", result.steps)
            return objective_value(spec, result, tracking_uri)

    return objective


def _trial_changes(spec: SweepSpec, trial, arm: Arm, seed: int, threads: int) -> dict:
    """What a trial changes in its arm's config: its seed, names, no progress bar, resume, and this worker's share of
    the cores when the config leaves the thread count open."""
    run_name = f"{arm.name}-seed{seed}" if spec.kind != "search" else f"t{trial.number}-seed{seed}"
    changes = {
        "seed": seed,
        "tracking.experiment": spec.name,
        "tracking.run_name": run_name,
        "train.progress": "none",
        "train.resume": True,
    }
    changes |= {"train.threads": threads} if threads else {}
    assert set(changes) <= set(PER_TRIAL_KEYS), "a per-trial key must be in trialkeys.PER_TRIAL_KEYS (pooling reads it)"
    return changes


def _trial_tags(spec: SweepSpec, trial, arm: Arm) -> dict[str, str]:
    tags = {store.TAG_SWEEP: spec.name, store.TAG_TRIAL: str(trial.number), store.TAG_KIND: store.KIND_TRIAL}
    return tags | {store.TAG_FACTOR: arm.factor, store.TAG_LEVEL: arm.level}


def _started(trial, tracking_uri: str | None, sweep: str, arm: str, seed: int, run_id: str) -> None:
    trial.set_user_attr("mlflow_run_id", run_id)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    done = trial.study.get_trials(deepcopy=False, states=finished)
    recorded = frozenset(t.user_attrs["mlflow_run_id"] for t in done if "mlflow_run_id" in t.user_attrs)
    close_orphaned_runs(tracking_uri, sweep, arm, seed, keep=run_id, recorded=recorded)


@contextlib.contextmanager
def _failure_recorded(trial):
    """Record why a trial failed on it (interrupted | rank_lost | error) and let the exception go on; a lost rank is
    not the config's fault, so the trial is queued again."""
    try:
        yield
    except (optuna.TrialPruned, KeyboardInterrupt) as exc:
        if isinstance(exc, KeyboardInterrupt):
            trial.set_user_attr(slots.FAILURE_KIND, "interrupted")
        raise
    except RankLost as exc:
        log.error("trial %d lost a rank: %s", trial.number, exc)
        trial.set_user_attr(slots.FAILURE_KIND, slots.RANK_LOST)
        trial.set_user_attr("failure", f"RankLost: {exc}"[:2000])
        raise
    except Exception as exc:
        log.exception("trial %d failed", trial.number)
        trial.set_user_attr(slots.FAILURE_KIND, "error")
        trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}"[:2000])
        raise


def crossed(value: float, threshold: float, direction: str) -> bool:
    """Whether a metric value is past the threshold the better way (at or below it when minimized)."""
    return value <= threshold if direction == "minimize" else value >= threshold


def objective_value(spec: SweepSpec, result, tracking_uri: str | None) -> float:
    """What the sweep's objective makes of a finished trial (an onset or rate value is also logged on its run).
    rate: 1.0 when its final objective is past the threshold, else 0.0. onset: the first validation step at which its
    validation metric was past it (read from the run's logged history, so a resumed trial counts its earlier
    validations too), or, censored, one step past its last step when it never was. t: the metric itself."""
    if spec.metric not in result.metrics:
        raise KeyError(f"objective {spec.metric} was not logged; logged: {', '.join(sorted(result.metrics))}")
    if spec.test == "t":
        return result.metrics[spec.metric]
    value = _reduced(spec, result, tracking_uri)
    store.client(tracking_uri).log_metric(result.run_id, spec.objective_key, value, step=result.steps)
    return value


def _reduced(spec: SweepSpec, result, tracking_uri: str | None) -> float:
    if spec.test == "rate":
        return float(crossed(result.metrics[spec.metric], spec.threshold, spec.direction))
    history = store.client(tracking_uri).get_metric_history(result.run_id, spec.report_metric)
    steps = sorted(m.step for m in history if crossed(m.value, spec.threshold, spec.direction))
    return float(steps[0]) if steps else float(result.steps + 1)


def _claim(spec: SweepSpec, study, trial, worker: str) -> tuple[Arm, int]:
    """This trial's (arm, seed), recorded on it; a trial with no work (nothing queued, or its (arm, seed) is already
    another trial's) is skipped (`_skip` raises)."""
    if spec.kind == "search":
        overrides = sample_overrides(list(spec.space), trial)
        arm, seed = Arm(arm_name(overrides), overrides), spec.seeds[0]
    else:
        if "arm" not in trial.user_attrs:  # queued trials carry their (arm, seed); this one was not queued
            _skip(trial, "no queued work left (another worker took the last trial)")
        arms = {a.name: a for a in spec.arms}
        arm = arms[trial.suggest_categorical("arm", list(arms))]
        seed = int(trial.user_attrs["seed"])  # an attribute, not a parameter: no dashboard ranks it as one
        other = _find_duplicate(study, trial, arm.name, seed)
        if other is not None:
            _skip(trial, f"trial {other.number} already has {arm.name} seed {seed}")
    identity = {"arm": arm.name, "seed": seed, "factor": arm.factor, "level": arm.level, "worker": worker}
    for key, value in identity.items():
        trial.set_user_attr(key, value)
    return arm, seed


def _pruning_reporter(spec: SweepSpec, trial):
    """reporter(step, val_metrics) for `run_trial`: reports the sweep's validation metric to Optuna and stops the
    trial (as `pruned`, MLflow status KILLED) when the pruner says so."""

    def report(step: int, metrics: dict[str, float]) -> None:
        value = metrics.get(spec.report_metric)
        if value is None:
            return
        trial.report(value, step)
        if trial.should_prune():
            exc = optuna.TrialPruned(f"pruned at step {step}: {spec.report_metric}={value:.4g}")
            exc.mlflow_status, exc.mta_state = "KILLED", "pruned"
            raise exc

    return report
