"""Time to threshold: the first validation step at which a run's objective reaches a level, per arm and seed.

    per_run, per_arm = time_to_threshold(histories, "val/error", done, threshold=0.05, direction="minimize")

"Learns slower" becomes a number: per seed, the first step whose validation value is at or below the threshold
(at or above it for a maximised metric), or never; per arm, how many seeds got there and the median and range of
their steps. A run that never gets there counts as slower than any that did, so the median is taken over all
seeds with "never" ranked last (the lower median for an even count; "never" when at least half never got
there). The step grain is the validation interval of the sweep.
"""

from __future__ import annotations

import polars as pl

DEFAULT_THRESHOLDS = {"toy/error": 0.05}
"""Objectives with a threshold the report uses unless `--threshold` says otherwise: the toy task's 5% error."""

RUN_SCHEMA = {"arm": pl.String, "seed": pl.Int64, "step": pl.Int64, "last_step": pl.Int64}
ARM_SCHEMA = {"arm": pl.String, "reached": pl.Int64, "n": pl.Int64, "median_step": pl.Int64}
ARM_SCHEMA |= {"min_step": pl.Int64, "max_step": pl.Int64}


def time_to_threshold(
    histories: pl.DataFrame | None, key: str, done: pl.DataFrame, threshold: float, direction: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per run: arm, seed, step (null: never), last_step validated; per arm: reached, n, median_step (null: never
    for the median seed), min_step, max_step over the seeds that reached it)."""
    if histories is None or histories.is_empty():
        return pl.DataFrame(schema=RUN_SCHEMA), pl.DataFrame(schema=ARM_SCHEMA)
    rows = histories.filter((pl.col("key") == key) & pl.col("run_id").is_in(done["run_id"].implode()))
    hit = pl.col("value") <= threshold if direction == "minimize" else pl.col("value") >= threshold
    per_run = (
        rows.group_by("arm", "seed")
        .agg(pl.col("step").filter(hit).min().alias("step"), pl.col("step").max().alias("last_step"))
        .sort("arm", "seed")
    )
    arms = []
    for (arm,), runs in per_run.group_by("arm", maintain_order=True):
        steps = sorted(runs["step"].to_list(), key=lambda s: (s is None, s or 0))
        reached = [s for s in steps if s is not None]
        median = steps[(len(steps) - 1) // 2]  # the lower median; None when it is a run that never got there
        arms.append((arm, len(reached), len(steps), median, min(reached, default=None), max(reached, default=None)))
    return per_run.cast(RUN_SCHEMA), pl.DataFrame(arms, schema=ARM_SCHEMA, orient="row").sort("arm")


def threshold_for(objective: str, given: float | None) -> float | None:
    """The threshold the report uses: the one given, else the objective's default, else none (no section)."""
    return given if given is not None else DEFAULT_THRESHOLDS.get(objective)
