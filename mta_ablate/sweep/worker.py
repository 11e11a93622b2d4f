"""The worker loop: pull queued trials of a sweep from the Optuna storage and run them until none are left.

    mta-ablate worker NAME --storage URL [--tracking-uri URI] [--threads N]

One process, one trial at a time, each trial = one (arm, seed) through the same `run_trial` as `mta-ablate train`.
Workers never talk to each other; the storage is the only coordination: `study.optimize` pops a queued trial
atomically, heartbeats mark the trial of a dead worker stale, and the retry callback queues it again.
"""

from __future__ import annotations

import logging
import os
import time

import optuna

from mta_ablate.sweep import adaptive, slots
from mta_ablate.sweep import study as sweep_study
from mta_ablate.sweep.objective import make_objective
from mta_ablate.sweep.spec import SweepSpec

log = logging.getLogger(__name__)


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
    from mta_ablate.cluster import Leader, cluster_from_env
    from mta_ablate.config.checks import check_workers
    from mta_ablate.rank_entry import follow

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
        if ended and ended[-1].state == TrialState.FAIL and slots.requeue_lost_rank(study, spec, ended[-1]):
            retried.add(ended[-1].number)
        adaptive.extend(study, spec)  # queue the next seeds at once, so that idle workers can take them
    failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in ended)
    log.info("worker %s: %d trials (%d failed), sweep %s has no more work", worker, len(ended), failed, spec.name)
    return failed
