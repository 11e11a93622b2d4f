"""Two sweeps that share arms, side by side: the same arm (same name) under two sweeps, per metric.

    frame = compare_sweeps(load_sweep("toy_task"), load_sweep("toy_task_3000"), "toy/error")

Per shared arm: n and mean in each sweep, the difference (second - first), and a test: paired by seed (paired t-test)
when the arm ran the same seeds in both, else Welch's t-test; Holm's correction across the shared arms.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from dashboards import stats
from dashboards.load import Sweep


def compare_sweeps(first: Sweep, second: Sweep, metric: str) -> pl.DataFrame:
    """One row per arm both sweeps ran: arm, n_a, mean_a, n_b, mean_b, diff, test, p, p_holm."""
    from scipy import stats as scipy_stats

    a_done, b_done = first.complete(), second.complete()
    shared = [arm for arm in first.arms() if arm in set(second.arms())]
    rows = []
    for arm in shared:
        a, b = stats.arm_values(a_done, metric, arm), stats.arm_values(b_done, metric, arm)
        row = {"arm": arm, "n_a": a.height, "mean_a": _mean(a), "n_b": b.height, "mean_b": _mean(b)}
        row["diff"] = row["mean_b"] - row["mean_a"]
        same_seeds = a.height >= 2 and sorted(a["seed"]) == sorted(b["seed"])
        if same_seeds:
            joined = a.join(b, on="seed", suffix="_b")
            row["test"], row["p"] = "paired t", stats.paired_test(joined["value_b"], joined["value"]).p_t
        elif a.height >= 2 and b.height >= 2:
            result = scipy_stats.ttest_ind(b["value"].to_numpy(), a["value"].to_numpy(), equal_var=False)
            row["test"], row["p"] = "Welch t", float(result.pvalue)
        else:
            row["test"], row["p"] = "none (n<2)", math.nan
        rows.append(row)
    holm = stats.holm([r["p"] for r in rows])
    for row, p in zip(rows, holm, strict=True):
        row["p_holm"] = p
    schema = {"arm": pl.String, "n_a": pl.Int64, "mean_a": pl.Float64, "n_b": pl.Int64, "mean_b": pl.Float64}
    schema |= {"diff": pl.Float64, "test": pl.String, "p": pl.Float64, "p_holm": pl.Float64}
    return pl.DataFrame(rows, schema=schema, orient="row")


def _mean(values: pl.DataFrame) -> float:
    return float(np.mean(values["value"].to_numpy())) if values.height else math.nan
