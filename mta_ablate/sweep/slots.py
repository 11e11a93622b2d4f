"""The queue of a fixed design: one Optuna trial per (arm, seed), carrying its identity in user attributes; which
slots still need a trial, and which failed trial is queued again.

    slot_of(trial)                       # (arm, seed) of a queued or finished trial, or None
    queue_missing_slots(study, spec)     # enqueue every (arm, seed) with no live or finished trial
"""

from __future__ import annotations

from optuna.trial import TrialState

from mta_ablate.sweep.spec import SweepSpec

FAILURE_KIND = "mta.failure_kind"  # user attr of a failed trial: interrupted | error | stale | rank_lost
RANK_LOST, MAX_RETRY = "rank_lost", 3  # a multi-device trial that lost a rank is queued again, up to 3 times
SKIPPED = "mta.skipped"  # user attr of a trial that found no work (a race for the last queued trial)


def slot_of(trial) -> tuple[str, int] | None:
    attrs = trial.user_attrs
    return (attrs["arm"], int(attrs["seed"])) if "arm" in attrs and "seed" in attrs else None


def queue_missing_slots(study, spec: SweepSpec, retry_failed: bool = False) -> int:
    """Enqueue every (arm, seed) with no waiting, running, complete or pruned trial: the design's first seeds, and any
    seed an adaptive sweep added. A slot whose trials all failed is queued again when they were interrupted (Ctrl-C,
    a dead worker), or with retry_failed. Returns how many."""
    taken, failed = set(), {}
    for t in study.get_trials(deepcopy=False):
        slot = slot_of(t)
        if slot is None or t.user_attrs.get(SKIPPED):
            continue
        if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED):
            taken.add(slot)
        elif t.state == TrialState.FAIL:
            failed.setdefault(slot, []).append(t.user_attrs.get(FAILURE_KIND, "stale"))
    arms = {a.name: a for a in spec.arms}
    wanted = [(arm.name, seed) for arm, seed in spec.slots()] + [s for s in failed if s[0] in arms]
    queued = 0
    for slot in dict.fromkeys(wanted):
        if slot in taken:
            continue
        kinds = failed.get(slot)
        if kinds and not retry_failed and all(k == "error" for k in kinds):
            continue  # it raised (NaN, bad data): recorded as failed, not retried unless asked
        enqueue_slot(study, arms[slot[0]], slot[1])
        queued += 1
    return queued


def requeue_lost_rank(study, spec: SweepSpec, trial) -> bool:
    """Queue the (arm, seed) of a trial that failed because one of its ranks died or hung, unless the slot already
    lost a rank MAX_RETRY times (then it is left failed, like a trial that raised). The new trial resumes the same
    MLflow run from its last checkpoint."""
    slot = slot_of(trial)
    if trial.user_attrs.get(FAILURE_KIND) != RANK_LOST or slot is None:
        return False
    trials = study.get_trials(deepcopy=False)
    lost = sum(
        t.state == TrialState.FAIL and t.user_attrs.get(FAILURE_KIND) == RANK_LOST for t in trials if slot_of(t) == slot
    )
    if lost > MAX_RETRY or any(t.state == TrialState.WAITING and slot_of(t) == slot for t in trials):
        return False
    enqueue_slot(study, {a.name: a for a in spec.arms}[slot[0]], slot[1])
    return True


def enqueue_slot(study, arm, seed: int) -> None:
    """Queue one (arm, seed) trial, carrying its identity in user attributes."""
    study.enqueue_trial(
        {"arm": arm.name},
        user_attrs={"arm": arm.name, "seed": seed, "factor": arm.factor, "level": arm.level},
    )
