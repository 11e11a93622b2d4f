"""Seeds until decided, inside a sweep: after an arm's seeds and its reference's are finished, queue one more seed of
both only while their comparison is open (see `mta_ablate.sequential` for the rule and its guarantee).

    extend(study, spec)      # under the storage's lock: decisions from the finished trials, then the missing slots

Adding seeds is one atomic step: every worker calls `extend` after each trial and whenever the queue is empty, and
the whole read-decide-enqueue runs under a lock that all hosts share (an advisory lock in PostgreSQL, a file lock
beside a SQLite file), so two workers finishing at once cannot queue the same (arm, seed) twice. Each (arm, seed)
still runs exactly once: the queue and the duplicate check of fixed designs are unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
from pathlib import Path

from optuna.trial import TrialState

from mta_ablate.sequential import Decision, decide
from mta_ablate.sweep.slots import FAILURE_KIND, SKIPPED, enqueue_slot, slot_of
from mta_ablate.sweep.spec import SweepSpec

log = logging.getLogger(__name__)


@contextlib.contextmanager
def storage_lock(study, name: str):
    """A lock shared by every process that opens this storage: pg_advisory_lock, MySQL GET_LOCK, or flock on
    `<sqlite file>.<name>.lock` (a SQLite storage is one host's file)."""
    from sqlalchemy import text

    engine = study._storage._backend.engine if hasattr(study._storage, "_backend") else study._storage.engine
    dialect = engine.dialect.name
    key = int.from_bytes(hashlib.sha256(f"mta-ablate/{name}".encode()).digest()[:8], "big", signed=True)
    if dialect == "sqlite":
        path = Path(engine.url.database or "optuna.db")
        with open(path.parent / f"{path.name}.{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with engine.connect() as connection:
        if dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
            unlock = text("SELECT pg_advisory_unlock(:k)")
        else:
            connection.execute(text("SELECT GET_LOCK(:k, 600)"), {"k": str(key)})
            unlock = text("SELECT RELEASE_LOCK(:k)")
        connection.commit()
        try:
            yield
        finally:
            connection.execute(unlock, {"k": key if dialect == "postgresql" else str(key)})
            connection.commit()


def slot_states(study) -> dict[tuple[str, int], tuple[str, float | None]]:
    """(arm, seed) -> (state, objective value) of its live or last trial: waiting | running | done (complete, pruned,
    or failed by an error: it will not run again) | retry (failed by an interruption or a dead worker)."""
    out: dict[tuple[str, int], tuple[str, float | None]] = {}
    rank = {"done": 3, "running": 2, "waiting": 1, "retry": 0}
    for t in study.get_trials(deepcopy=False):
        slot = slot_of(t)
        if slot is None or t.user_attrs.get(SKIPPED):
            continue
        if t.state == TrialState.COMPLETE:
            state, value = "done", t.value
        elif t.state == TrialState.PRUNED:
            state, value = "done", None
        elif t.state == TrialState.FAIL:
            state = "done" if t.user_attrs.get(FAILURE_KIND) == "error" else "retry"
            value = None
        else:
            state, value = ("running" if t.state == TrialState.RUNNING else "waiting"), None
        if slot not in out or rank[state] > rank[out[slot][0]]:
            out[slot] = (state, value)
    return out


def paired_diffs(spec: SweepSpec, values: dict[tuple[str, int], float | None], seeds: dict[str, int]):
    """arm -> differences (arm - reference) over its first `seeds[arm]` seeds, in seed order, where both exist."""
    out = {}
    for arm, ref in spec.reference_of.items():
        if arm == ref:
            continue
        diffs = []
        for seed in range(seeds.get(arm, 0)):
            a, r = values.get((arm, seed)), values.get((ref, seed))
            if a is not None and r is not None:
                diffs.append(a - r)
        out[arm] = diffs
    return out


def plan(spec: SweepSpec, slots: dict[tuple[str, int], tuple[str, float | None]]):
    """(decisions, slots to queue): the pure part of `extend`, from the state of every slot."""
    policy = spec.policy
    seeds = {arm: policy.initial for arm in spec.reference_of}
    for arm, seed in slots:
        if arm in seeds:
            seeds[arm] = max(seeds[arm], seed + 1)
    values = {slot: value for slot, (state, value) in slots.items() if state == "done"}
    decisions = decide(paired_diffs(spec, values, seeds), policy, spec.value_direction, spec.test)
    wanted = []
    for arm, decision in decisions.items():
        ref, n = spec.reference_of[arm], seeds[arm]
        finished = all(slots.get((a, s), ("", None))[0] == "done" for a in (arm, ref) for s in range(n))
        if finished and decision.open and n < policy.max:
            wanted += [(arm, n), (ref, n)]
    return decisions, [slot for slot in dict.fromkeys(wanted) if slot not in slots]


def extend(study, spec: SweepSpec) -> list[tuple[str, int]]:
    """Queue the next seed of every open comparison whose seeds are finished; returns the slots queued."""
    if spec.policy is None:
        return []
    arms = {a.name: a for a in spec.arms}
    with storage_lock(study, spec.name):
        _, wanted = plan(spec, slot_states(study))
        for arm, seed in wanted:
            enqueue_slot(study, arms[arm], seed)
    if wanted:
        log.info(
            "sweep %s: comparisons still open, queued %s", spec.name, ", ".join(f"{a} seed {s}" for a, s in wanted)
        )
    return wanted


def decisions(study, spec: SweepSpec) -> dict[str, Decision]:
    """The current decision of every compared arm (for `status`)."""
    return plan(spec, slot_states(study))[0] if spec.policy else {}
