"""The worker loop: pull queued trials of a sweep from the Optuna storage and run them until none are left.

    mta-ablate worker NAME --storage URL [--tracking-uri URI] [--threads N]

One process, one trial at a time, each trial = one (arm, seed) through the same `run_trial` as `mta-ablate train`.
Workers never talk to each other; the storage is the only coordination: `study.optimize` pops a queued trial
atomically, heartbeats mark the trial of a dead worker stale, and the retry callback queues it again.
"""

from __future__ import annotations

import json
import logging
import os
import time

from mta_ablate.sweep import adaptive
from mta_ablate.sweep import study as sweep_study
from mta_ablate.sweep.design import Arm, arm_name
from mta_ablate.sweep.resolve import trial_config
from mta_ablate.sweep.spec import SweepSpec
from mta_ablate.tracking import mlflow_store as store

log = logging.getLogger(__name__)


def _skip(trial, reason: str):
    """Record a trial that found nothing to do as skipped (pruned, no MLflow run); reports and queues ignore it."""
    import optuna

    trial.set_user_attr(sweep_study.SKIPPED, reason)
    raise optuna.TrialPruned(reason)


def _find_duplicate(study, trial, arm: str, seed: int):
    """A finished trial of the same (arm, seed), or a running one that came first (so that of two trials popped at
    once for one (arm, seed), exactly one runs)."""
    from optuna.trial import TrialState

    for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)):
        if other.number == trial.number or other.user_attrs.get(sweep_study.SKIPPED):
            continue
        if sweep_study.slot_of(other) != (arm, seed):
            continue
        if other.state != TrialState.RUNNING or other.number < trial.number:
            return other
    return None


def close_orphaned_runs(tracking_uri: str | None, sweep: str, arm: str, seed: int, keep: str) -> None:
    """Mark FAILED every other RUNNING MLflow run of this (arm, seed): its worker died (one live trial per slot)."""
    client = store.client(tracking_uri)
    experiment = client.get_experiment_by_name(sweep)
    if experiment is None:
        return
    query = (
        f"tags.`{store.TAG_ARM}` = '{arm}' AND tags.`{store.TAG_SEED}` = '{seed}' "
        f"AND tags.`{store.TAG_KIND}` = '{store.KIND_TRIAL}' AND attributes.status = 'RUNNING'"
    )
    for run in client.search_runs([experiment.experiment_id], query):
        if run.info.run_id != keep:
            client.set_tag(run.info.run_id, store.TAG_STATE, "failed")
            client.set_tag(run.info.run_id, store.TAG_FAILURE, f"worker died; trial rerun as MLflow run {keep}")
            client.set_terminated(run.info.run_id, "FAILED")


def make_objective(
    spec: SweepSpec, study, tracking_uri: str | None, parent: str | None, threads: int, worker: str, leader=None
):
    """The Optuna objective of this worker: claim the trial's (arm, seed), train it with `run_trial`, return the
    objective; a failure is recorded on the trial (interrupted or error) and re-raised."""
    import optuna

    from mta_ablate.ranks import RankLost
    from mta_ablate.trial import run_trial

    equal_steps = json.loads(study.user_attrs.get(sweep_study.ATTR_STEPS, "{}"))
    base_threads = spec.first_config.train.threads

    def run(trial: optuna.Trial) -> float:
        started = time.time()
        arm, seed = _claim(spec, study, trial, worker)
        log.info("trial %d arm=%s seed=%s running", trial.number, arm.name, seed)
        run_name = f"{arm.name}-seed{seed}" if spec.kind != "search" else f"t{trial.number}-seed{seed}"
        changes = {
            "seed": seed,
            "tracking.experiment": spec.name,
            "tracking.run_name": run_name,
            "train.progress": "none",
            "train.resume": True,
        }
        if threads and base_threads == 0:  # the config leaves it open: this worker's share of the cores
            changes["train.threads"] = threads
        config = trial_config(spec, arm, changes, equal_steps)
        study.pruner = sweep_study.pruner_for(spec, config.train.max_steps)  # this trial's own scale
        tags = {store.TAG_SWEEP: spec.name, store.TAG_TRIAL: str(trial.number), store.TAG_KIND: store.KIND_TRIAL}
        tags |= {store.TAG_FACTOR: arm.factor, store.TAG_LEVEL: arm.level}

        def started_run(run_id: str) -> None:
            trial.set_user_attr("mlflow_run_id", run_id)
            close_orphaned_runs(tracking_uri, spec.name, arm.name, seed, keep=run_id)

        report = _pruning_reporter(spec, trial)
        result = run_trial(
            config,
            reporter=report,
            parent_run_id=parent,
            tags=tags,
            tracking_uri=tracking_uri,
            on_start=started_run,
            leader=leader,
        )
        work = result.timings["fit_s"] + result.timings["evaluate_s"]
        trial.set_user_attr("overhead_s", round(time.time() - started - work, 3))
        trial.set_user_attr("steps", result.steps)
        if spec.metric not in result.metrics:
            raise KeyError(f"objective {spec.metric} was not logged; logged: {', '.join(sorted(result.metrics))}")
        if spec.test == "t":
            return result.metrics[spec.metric]
        value = objective_value(spec, result, tracking_uri)
        store.client(tracking_uri).log_metric(result.run_id, spec.objective_key, value, step=result.steps)
        return value

    def objective(trial: optuna.Trial) -> float:
        try:
            return run(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr(sweep_study.FAILURE_KIND, "interrupted")
            raise
        except RankLost as exc:  # a rank died or hung: not the config's fault, so the trial is queued again
            log.error("trial %d lost a rank: %s", trial.number, exc)
            trial.set_user_attr(sweep_study.FAILURE_KIND, sweep_study.RANK_LOST)
            trial.set_user_attr("failure", f"RankLost: {exc}"[:2000])
            raise
        except Exception as exc:
            log.exception("trial %d failed", trial.number)
            trial.set_user_attr(sweep_study.FAILURE_KIND, "error")
            trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}"[:2000])
            raise

    return objective


def crossed(value: float, threshold: float, direction: str) -> bool:
    """Whether a metric value is past the threshold the better way (at or below it when minimized)."""
    return value <= threshold if direction == "minimize" else value >= threshold


def objective_value(spec: SweepSpec, result, tracking_uri: str | None) -> float:
    """What an onset or rate objective makes of a finished trial. rate: 1.0 when its final objective is past the
    threshold, else 0.0. onset: the first validation step at which its validation metric was past it (read from the
    run's logged history, so a resumed trial counts its earlier validations too), or, censored, one step past its
    last step when it never was."""
    if spec.test == "rate":
        return float(crossed(result.metrics[spec.metric], spec.threshold, spec.direction))
    history = store.client(tracking_uri).get_metric_history(result.run_id, spec.report_metric)
    steps = sorted(m.step for m in history if crossed(m.value, spec.threshold, spec.direction))
    return float(steps[0]) if steps else float(result.steps + 1)


def _claim(spec: SweepSpec, study, trial, worker: str) -> tuple[Arm, int]:
    """This trial's (arm, seed), recorded on it; a trial with no work (nothing queued, or its (arm, seed) is already
    another trial's) is skipped (`_skip` raises)."""
    from mta_ablate.sweep.design import sample_overrides

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
    import optuna

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


def _load_when_ready(name: str, storage: str, tracking_uri: str | None, wait_s: float = 600):
    """`load()`, waiting (up to wait_s) while the sweep's creator is still queueing its trials: a worker started on
    another host together with the sweep would otherwise find an empty queue and leave at once."""
    deadline = time.time() + wait_s
    while True:
        try:
            return sweep_study.load(name, storage, tracking_uri)
        except sweep_study.SweepNotReady:
            if time.time() > deadline:
                raise
            log.info("sweep %s is still being created; waiting for its trials", name)
            time.sleep(2)


def _warn_if_oversubscribed(study, worker: str, threads: int) -> None:
    """Warn when this host's running trials plus this worker want more threads than the host has cores: two 2-thread
    processes on 2 cores run each trial 8-10x slower than one thread each."""
    from optuna.trial import TrialState

    host = worker.split(":", 1)[0]
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    here = sum(str(t.user_attrs.get("worker", "")).startswith(f"{host}:") for t in running)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = (here + 1) * max(1, threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or 1)
    if wanted > cores:
        log.warning(
            "host %s: %d trial(s) already running here plus this worker want %d threads on %d cores; trials will "
            "slow each other down several-fold (start fewer workers, or give each fewer threads)",
            host,
            here,
            wanted,
            cores,
        )


def _no_interrupt_traceback(record) -> bool:
    """Optuna logs a failed trial with its traceback; an interruption (Ctrl-C, SIGTERM) is not a bug: one line."""
    if record.exc_info and record.exc_info[0] is not None and issubclass(record.exc_info[0], KeyboardInterrupt):
        record.exc_info = None
    return True


def run_worker(
    name: str,
    storage: str,
    tracking_uri: str | None = None,
    threads: int = 0,
    worker: str | None = None,
    devices: int = 0,
) -> int:
    """Run trials of sweep `name` until its queue is empty (and nothing is running) or its budget is spent.
    `devices`: the devices this worker owns (0: as many as the largest trial needs). A worker launched as rank > 0 of a
    cluster (`cluster.cluster_from_env`) follows rank 0's trials instead. Returns how many of the trials this worker ran
    failed."""
    from mta_ablate.cluster import Leader, cluster_from_env, follow
    from mta_ablate.config.checks import check_workers

    cluster = cluster_from_env()
    if cluster is not None and cluster.rank > 0:
        return follow(cluster)
    worker = worker or f"{os.uname().nodename}:{os.getpid()}"
    study, spec, tracking_uri, parent = _load_when_ready(name, storage, tracking_uri)
    trains = [c.train for c in spec.configs.values()] or [spec.first_config.train]
    devices = check_workers(trains, 1, devices or None, cluster)  # 0: as many as the largest trial needs
    _warn_if_oversubscribed(study, worker, threads * devices)
    leader = Leader(cluster) if cluster is not None else None
    try:
        objective = make_objective(spec, study, tracking_uri, parent, threads, worker, leader)
        return _work(spec, study, objective, worker)
    finally:
        if leader is not None:
            leader.close()


def _logged(trial):
    """Log one line for a trial that ended (`trial 3 arm=mta seed=1 complete objective=0.12 in 41s`); return it."""
    state = {"COMPLETE": "complete", "FAIL": "failed"}.get(trial.state.name, trial.state.name.lower())
    line = f"trial {trial.number} arm={trial.user_attrs.get('arm')} seed={trial.user_attrs.get('seed')} {state}"
    if trial.value is not None:
        line += f" objective={trial.value:.6g}"
    if trial.datetime_start and trial.datetime_complete:
        line += f" in {(trial.datetime_complete - trial.datetime_start).total_seconds():.0f}s"
    log.info("%s", line)
    return trial


def _work(spec: SweepSpec, study, objective, worker: str) -> int:
    """The worker's loop: run queued trials until there are none left, queueing adaptive seeds and lost-rank retries.
    Returns how many of its trials failed (and were not queued again)."""
    import optuna
    from optuna.trial import TrialState

    deadline = study.user_attrs.get("mta.deadline")
    ended, retried = [], set()  # every trial this worker ran, as it ended; those queued again (a lost rank)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.get_logger("optuna").addFilter(_no_interrupt_traceback)
    while deadline is None or time.time() < deadline:
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again by the callback
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if spec.kind == "search":
            done = sum(t.state != TrialState.WAITING for t in trials)  # failed ones count: no endless retries
            if spec.max_trials is not None and done >= spec.max_trials and not waiting:
                break
        elif not waiting:
            if adaptive.extend(study, spec):  # a comparison is still open: its next seeds are queued
                continue
            if any(t.state == TrialState.RUNNING for t in trials):
                time.sleep(min(2.0, spec.heartbeat_s))  # wait: a running trial may die and come back to the queue
                continue
            break
        study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[lambda _, t: ended.append(_logged(t))])
        if ended and ended[-1].state == TrialState.FAIL and sweep_study.requeue_lost_rank(study, spec, ended[-1]):
            retried.add(ended[-1].number)
        adaptive.extend(study, spec)  # queue the next seeds at once, so that idle workers can take them
    failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in ended)
    log.info("worker %s: %d trials (%d failed), sweep %s has no more work", worker, len(ended), failed, spec.name)
    return failed
