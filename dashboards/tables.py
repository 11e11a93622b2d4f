"""The per-arm tables a report shows beside its comparisons (pure, on polars frames): cost, needle accuracy by
context, needles and depth, learning curves, and each arm at its reference's training compute."""

from __future__ import annotations

import re

import polars as pl

from dashboards.load import PARAM_PREFIX

COST = ("perf/tokens_per_s", "perf/step_ms", "perf/peak_mem_mib")
PARAMS = ("model/params/total", "model/params/mta", "model/params/non_mta")
NEEDLE_CELL = re.compile(r"^needle/ctx(\d+)/k(\d+)/depth(\d+)-(\d+)/exact$")
NEEDLE_K = re.compile(r"^needle/ctx(\d+)/k(\d+)/exact$")
NEEDLE_WRONG = re.compile(r"^needle/ctx(\d+)/k(\d+)/wrong_needle$")


def cost_table(done: pl.DataFrame, arms: list[str], ref_of: dict[str, str]) -> pl.DataFrame:
    cols = []
    for key in PARAMS:
        if f"{PARAM_PREFIX}{key}" in done.columns:
            cols.append(pl.col(f"{PARAM_PREFIX}{key}").cast(pl.Float64, strict=False).mean().alias(key))
    cols += [pl.col(key).mean().alias(key) for key in COST if key in done.columns]
    frame = done.group_by("arm").agg(pl.len().alias("n"), *cols)
    order = pl.DataFrame({"arm": arms, "_order": list(range(len(arms)))})
    frame = order.join(frame, on="arm", how="left").sort("_order").drop("_order")
    if "perf/step_ms" in frame.columns:
        step = dict(zip(frame["arm"], frame["perf/step_ms"], strict=True))
        base = {arm: step.get(ref_of.get(arm) or (arms[0] if not ref_of else "")) for arm in step}
        rel = [step[a] / base[a] if step[a] is not None and base[a] else None for a in step]
        frame = frame.with_columns(pl.Series("step_rel", rel, dtype=pl.Float64))
    return frame


def needle_tables(done: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    cells, ks, wrong = [], [], []
    for column in done.columns:
        if m := NEEDLE_CELL.match(column):
            ctx, k, lo, hi = (int(g) for g in m.groups())
            cells.append(
                done.select("arm", pl.col(column).alias("accuracy")).with_columns(
                    ctx=pl.lit(ctx), k=pl.lit(k), depth_lo=pl.lit(lo), depth_hi=pl.lit(hi)
                )
            )
        elif m := NEEDLE_K.match(column):
            ctx, k = (int(g) for g in m.groups())
            ks.append(done.select("arm", pl.col(column).alias("accuracy")).with_columns(ctx=pl.lit(ctx), k=pl.lit(k)))
        elif m := NEEDLE_WRONG.match(column):
            ctx, k = (int(g) for g in m.groups())
            rate = done.select("arm", pl.col(column).alias("accuracy"))  # the wrong-needle rate, same layout
            wrong.append(rate.with_columns(ctx=pl.lit(ctx), k=pl.lit(k)))

    def mean_over_seeds(parts: list[pl.DataFrame], keys: list[str]) -> pl.DataFrame:
        if not parts:
            return pl.DataFrame(schema={"arm": pl.String} | {k: pl.Int32 for k in keys[1:]} | {"accuracy": pl.Float64})
        stacked = pl.concat(parts).drop_nulls("accuracy")
        agg = stacked.group_by(keys).agg(pl.col("accuracy").mean(), pl.len().alias("n"))
        return agg.sort(keys)

    by_k = ["arm", "ctx", "k"]
    by_depth = mean_over_seeds(cells, [*by_k, "depth_lo", "depth_hi"])
    return by_depth, mean_over_seeds(ks, by_k), mean_over_seeds(wrong, by_k)


def learning_curves(histories: pl.DataFrame | None, key: str, done: pl.DataFrame) -> pl.DataFrame:
    schema = {"arm": pl.String, "step": pl.Int64, "mean": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}
    if histories is None or histories.is_empty():
        return pl.DataFrame(schema=schema | {"n": pl.UInt32})
    rows = histories.filter((pl.col("key") == key) & pl.col("run_id").is_in(done["run_id"].implode()))
    agg = rows.group_by("arm", "step").agg(
        pl.col("value").mean().alias("mean"),
        pl.col("value").min().alias("lo"),
        pl.col("value").max().alias("hi"),
        pl.len().alias("n"),
    )
    return agg.sort("arm", "step")


def equal_compute(histories: pl.DataFrame | None, key: str, done: pl.DataFrame, ref_of: dict[str, str]):
    """Each compared arm at its reference's training compute, paired by seed.

    The reference's compute is its steps x FLOPs per step (`perf/train_flops`); the arm's validation curve (`key`) is
    interpolated linearly at step = that compute / the arm's FLOPs per step. An arm whose curve does not reach that
    far (it trained with less compute) has no value there: `reached` is false and the difference is null.
    Returns arm, ref, ref_steps, steps_at_equal_flops, reached, n, diff_equal_steps, diff_equal_flops."""
    import numpy as np

    schema = {"arm": pl.String, "ref": pl.String, "ref_steps": pl.Int64, "steps_at_equal_flops": pl.Float64}
    schema |= {"reached": pl.Boolean, "n": pl.Int64, "diff_equal_steps": pl.Float64, "diff_equal_flops": pl.Float64}
    needed = {"perf/flops_per_step", "perf/train_flops"}
    if histories is None or histories.is_empty() or not needed <= set(done.columns):
        return pl.DataFrame(schema=schema)
    curves = histories.filter(pl.col("key") == key)
    rows = []
    for arm, ref in ref_of.items():
        if not ref or arm == ref:
            continue
        same_steps, same_flops, at_steps, ref_steps = [], [], [], 0
        for seed in done.filter(pl.col("arm") == arm)["seed"].to_list():
            a = done.filter((pl.col("arm") == arm) & (pl.col("seed") == seed)).row(0, named=True)
            r = done.filter((pl.col("arm") == ref) & (pl.col("seed") == seed))
            if r.is_empty() or not a["perf/flops_per_step"] or r["perf/train_flops"][0] is None:
                continue
            r = r.row(0, named=True)
            a_curve = curves.filter(pl.col("run_id") == a["run_id"]).sort("step")
            r_curve = curves.filter(pl.col("run_id") == r["run_id"]).sort("step")
            if a_curve.is_empty() or r_curve.is_empty():
                continue
            step = r["perf/train_flops"] / a["perf/flops_per_step"]
            ref_final, ref_steps = r_curve["value"][-1], int(r_curve["step"][-1])
            same_steps.append(a_curve["value"][-1] - ref_final)
            at_steps.append(step)
            if a_curve["step"][0] <= step <= a_curve["step"][-1]:
                same_flops.append(float(np.interp(step, a_curve["step"], a_curve["value"])) - ref_final)
        if not at_steps:
            continue
        reached = len(same_flops) == len(at_steps)
        rows.append(
            {
                "arm": arm,
                "ref": ref,
                "ref_steps": ref_steps,
                "steps_at_equal_flops": float(np.mean(at_steps)),
                "reached": reached,
                "n": len(at_steps),
                "diff_equal_steps": float(np.mean(same_steps)),
                "diff_equal_flops": float(np.mean(same_flops)) if reached else None,
            }
        )
    return pl.DataFrame(rows, schema=schema, orient="row")
