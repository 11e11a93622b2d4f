"""What a sweep's trials are doing, from the Optuna storage: rows for `status`, counts and an ETA for the live view."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from mta_ablate.power import seeds_range, seeds_to_decide
from mta_ablate.sweep.slots import FAILURE_KIND, SKIPPED


@dataclass
class TrialRow:
    number: int
    arm: str
    seed: int | None
    state: str  # waiting | running | complete | pruned | failed | retried (failed, then queued again)
    step: int | None
    value: float | None
    duration_s: float | None
    overhead_s: float | None
    note: str


STATE_NAMES = {"WAITING": "waiting", "RUNNING": "running", "COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}


def trial_rows(study) -> list[TrialRow]:
    """One row per trial that holds (or held) work; skipped trials (lost races for the last queued trial) are left out.
    A failed trial whose (arm, seed) was queued again later is shown as `retried`."""
    rows = []
    now = time.time()
    trials = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get(SKIPPED)]
    later_slots: dict[tuple, int] = {}
    for t in trials:
        if "arm" in t.user_attrs and t.state.name != "FAIL":
            key = (t.user_attrs["arm"], t.user_attrs.get("seed"))
            later_slots[key] = max(later_slots.get(key, -1), t.number)
    for t in trials:
        state = STATE_NAMES.get(t.state.name, t.state.name.lower())
        slot = (t.user_attrs.get("arm"), t.user_attrs.get("seed"))
        if state == "failed" and later_slots.get(slot, -1) > t.number:
            state = "retried"
        elif state == "failed" and t.user_attrs.get(FAILURE_KIND) == "interrupted":
            state = "interrupted"  # Ctrl-C or a signal: the same command queues it again and it resumes
        if t.datetime_start is None:
            duration = None
        else:
            end = t.datetime_complete.timestamp() if t.datetime_complete else now
            duration = end - t.datetime_start.timestamp()
        steps = t.intermediate_values
        note = t.user_attrs.get("failure", "")
        if state == "retried" and not note:
            interrupted = t.user_attrs.get(FAILURE_KIND) == "interrupted"
            note = "interrupted; queued again" if interrupted else "its worker died; queued again"
        rows.append(
            TrialRow(
                t.number,
                t.user_attrs.get("arm", "?"),
                t.user_attrs.get("seed"),
                state,
                max(steps) if steps else t.user_attrs.get("steps"),
                t.value,
                duration,
                t.user_attrs.get("overhead_s"),
                note,
            )
        )
    return rows


def counts(rows: list[TrialRow]) -> dict[str, int]:
    out = dict.fromkeys(("waiting", "running", "complete", "pruned", "failed", "interrupted", "retried"), 0)
    for r in rows:
        out[r.state] = out.get(r.state, 0) + 1
    return out


def eta_seconds(rows: list[TrialRow], workers: int) -> float | None:
    """Remaining queued + running trials x the median duration of finished ones / workers (None before any finish)."""
    done = [r.duration_s for r in rows if r.state in ("complete", "pruned") and r.duration_s]
    if not done:
        return None
    c = counts(rows)
    left = c["waiting"] + c["running"] * 0.5
    return left * statistics.median(done) / max(1, workers)


def table(rows: list[TrialRow], title: str, metric: str):
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=title)
    for col, justify in (
        ("trial", "right"),
        ("arm", "left"),
        ("seed", "right"),
        ("state", "left"),
        ("step", "right"),
        (metric, "right"),
        ("duration", "right"),
        ("overhead", "right"),
        ("note", "left"),
    ):
        t.add_column(col, justify=justify)
    style = {
        "complete": "green",
        "pruned": "yellow",
        "failed": "red",
        "running": "cyan",
        "waiting": "dim",
        "retried": "magenta",
    }
    for r in rows:
        t.add_row(
            str(r.number),
            escape(r.arm),
            "" if r.seed is None else str(r.seed),
            f"[{style[r.state]}]{r.state}[/]",
            "" if r.step is None else str(r.step),
            "" if r.value is None else f"{r.value:.4g}",
            "" if r.duration_s is None else f"{r.duration_s:.0f}s",
            "" if r.overhead_s is None else f"{r.overhead_s:.1f}s",
            escape(r.note[:60]),
        )
    return t


def decision_table(spec, decisions):
    """Per compared arm: its reference, paired seeds so far, the sequential rule's state and when it was reached."""
    from rich.table import Table

    policy = spec.policy
    rule = f"alpha {policy.alpha}" + (f", margin {policy.margin:g}" if policy.margin else "")
    table = Table(title=f"seeds until decided ({policy.initial} to {policy.max} seeds; {rule}; Holm across arms)")

    for col in ("arm", "vs", "n", "state", "decided at n", "sequential p", "seeds for 80% power"):
        table.add_column(col)
    for arm, d in decisions.items():
        state = d.state if d.state != "undecided" else ("undecided" if d.open else f"undecided at max ({policy.max})")
        at = str(d.decided_at) if d.decided_at else ""
        need = ""
        if not d.decided_at and spec.test == "t":  # the estimate is a t-test's: none for onset / rate sign tests
            need = seeds_range(seeds_to_decide(d.diff_mean, d.diff_sd, d.n, policy.alpha, len(decisions), policy))
        table.add_row(arm, spec.reference_of[arm], str(d.n), state, at, f"{d.p_seq:.3g}", need)
    table.caption = (
        "seeds for 80% power: what this rule, with Holm over the compared arms, would need at the observed effect, "
        "as a range over the effect's 80% interval (an effect from few seeds is itself noise)"
    )
    return table
