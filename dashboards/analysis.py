"""Turn a loaded sweep into the numbers of its report (pure: no files, no plotting).

sweep = load_sweep("kernel_sizes")
report = analyse(sweep, histories=load_histories(sweep, [validation_key(sweep.objective)]))
report.comparison      # long frame, one row per (metric, arm): summary over seeds + paired test vs reference
report.findings        # sentences saying which differences are significant and which are noise
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import polars as pl

from dashboards import stats, tables
from dashboards.convergence import threshold_for, time_to_threshold
from dashboards.load import Sweep
from mta_ablate.errors import ConfigError
from mta_ablate.metrics import HEADLINE, QUALITY, validation_key
from mta_ablate.power import seeds_range, seeds_to_decide
from mta_ablate.sequential import SeedPolicy, decide

log = logging.getLogger(__name__)

CORPUS_PPL = re.compile(r"^final/ppl/(.+)$")


@dataclass(frozen=True)
class Report:
    """Everything the report shows, as frames and sentences. Units: metrics in their own units (ppl, error
    fraction, accuracy fraction), tokens/s, ms per optimiser step, MiB, parameter counts."""

    sweep: Sweep
    reference: str
    """The arm every other arm is compared with, or the grid levels each arm's own reference has (`comparison.ref`
    names it per arm); "" when the sweep has none: no paired tests."""
    arms: list[str]
    metrics: list[str]
    """Metrics compared, the objective first."""
    comparison: pl.DataFrame
    """stats.compare_arms for every metric, stacked, with factor and level of each arm."""
    findings: list[str]
    """One sentence per (headline metric, non-reference arm)."""
    warnings: list[str]
    """Shown at the top: a sweep still running, failed or pruned trials, missing seeds."""
    not_complete: pl.DataFrame
    """Trials that are not complete: trial, arm, seed, state, failure."""
    cost: pl.DataFrame
    """Per arm: parameters (total, MTA only), tokens/s, step time (ms and relative to the reference), memory."""
    needle_cells: pl.DataFrame
    """arm, ctx (tokens), k (needles), depth_lo, depth_hi (percent), accuracy (mean over seeds), n."""
    needle_k: pl.DataFrame
    needle_wrong: pl.DataFrame
    """Like needle_k, with the wrong-needle rate (answered another needle's value) in its `accuracy` column."""
    """arm, ctx, k, accuracy (mean over seeds), n."""
    corpora: list[str]
    curves: pl.DataFrame
    """arm, step, mean, lo, hi (min and max over seeds), n: the objective's training history."""
    curve_key: str
    best_arm: str | None
    best_run_id: str | None
    """The best seed's run of the best arm (for its learned MTA parameters)."""
    ci: str
    alpha: float
    extras: dict = field(default_factory=dict)
    equal_compute: pl.DataFrame | None = None
    """Per compared arm: its validation metric at its reference's training FLOPs (see `_equal_compute`)."""
    time_to_threshold: dict | None = None
    """threshold, per_run, per_arm: the first validation step at the threshold (`convergence`); None: no threshold."""


def resolve_reference(sweep: Sweep, baseline: str | None) -> tuple[str, dict[str, str]]:
    """(label, arm -> its reference arm). The reference is `--baseline` if given, else the ablation design's
    reference, else an arm named `baseline`, else none ({}: no paired tests).

    `--baseline` is an arm, or some factor=level pairs of a grid (`variant=baseline`): each arm is then compared
    with the arm that has those levels and its own levels of the other factors (`variant=mta,target=first` with
    `variant=baseline,target=first`), so a grid is compared within each level of its other factors."""
    arms = sweep.arms()
    if baseline and baseline not in arms:
        return baseline, _within(sweep, arms, baseline)
    if not baseline and sweep.references:  # what the sweep file compared (and, with adaptive seeds, decided)
        ref_of = {arm: ref for arm, ref in sweep.references.items() if arm in arms and ref in arms}
        refs = set(ref_of.values())
        return (refs.pop() if len(refs) == 1 else "each arm's own levels"), ref_of
    label = baseline or (sweep.reference if sweep.reference in arms else "")
    label = label or ("baseline" if "baseline" in arms else "")
    return label, (dict.fromkeys(arms, label) if label else {})


def _levels(arm: str) -> dict[str, str] | None:
    """`variant=mta,target=first` -> {"variant": "mta", "target": "first"}; None if the name is not factor=level."""
    parts = [p.partition("=") for p in arm.split(",")]
    return {k: v for k, _, v in parts} if all(k and sep for k, sep, _ in parts) else None


def _within(sweep: Sweep, arms: list[str], baseline: str) -> dict[str, str]:
    grid = {arm: _levels(arm) for arm in arms}
    want = _levels(baseline)
    factors = {k: sorted({lv[k] for lv in grid.values()}) for k in (grid[arms[0]] or {})} if arms else {}
    if want is None or any(lv is None or lv.keys() != factors.keys() for lv in grid.values()):
        raise ConfigError(
            f"--baseline={baseline!r}: not an arm of sweep {sweep.name!r}, nor factor=level pairs of its grid;"
            f" arms: {arms}"
        )
    for k, v in want.items():
        if v not in factors.get(k, ()):
            allowed = "; ".join(f"{f}: {', '.join(levels)}" for f, levels in factors.items())
            raise ConfigError(f"--baseline={baseline!r}: {k}={v} is not a level of this grid; allowed: {allowed}")
    by_levels = {tuple(sorted(lv.items())): arm for arm, lv in grid.items()}
    return {arm: by_levels.get(tuple(sorted({**lv, **want}.items())), "") for arm, lv in grid.items()}


def _metrics(sweep: Sweep, done: pl.DataFrame) -> tuple[list[str], list[str]]:
    present = [c for c in done.columns if done[c].dtype == pl.Float64 and done[c].is_not_null().any()]
    corpora = sorted(m.group(1) for c in present if (m := CORPUS_PPL.match(c)))
    wanted = [sweep.objective, *QUALITY, *(f"final/ppl/{c}" for c in corpora), *tables.COST]
    return [m for m in dict.fromkeys(wanted) if m and m in present], corpora


def _warnings(sweep: Sweep, done: pl.DataFrame, arms: list[str]) -> list[str]:
    counts = sweep.counts()
    out = []
    if sweep.running:
        out.append(f"The sweep is still running ({counts['running']} trial(s) running): these numbers are partial.")
    for state in ("failed", "pruned"):
        if counts[state]:
            out.append(f"{counts[state]} trial(s) {state}; they are listed below and left out of the statistics.")
    if sweep.parent_run_id is None:
        out.append("No parent run of this sweep was found: design, objective and reference are unknown.")
    seeds = {arm: set(done.filter(pl.col("arm") == arm)["seed"].to_list()) for arm in arms}
    every = set().union(*seeds.values()) if seeds else set()
    for arm in arms if not sweep.policy else ():  # seeds until decided: arms stop at different n by design
        missing = sorted(every - seeds[arm])
        if missing:
            out.append(f"Arm {arm} has no complete trial for seed(s) {missing}.")
    if done.height and max(len(s) for s in seeds.values()) < 2:
        out.append("One seed per arm: no confidence interval or significance test is possible.")
    return out


def analyse(
    sweep: Sweep,
    histories: pl.DataFrame | None = None,
    baseline: str | None = None,
    ci: str = "t",
    seed: int = 0,
    alpha: float = 0.05,
    threshold: float | None = None,
) -> Report:
    """All numbers of the report. `histories`: load_histories(sweep, [validation_key(objective)]) or None.

    ci: "t" or "bootstrap" (seeded by `seed`); alpha: the level for "significant" after Holm's correction;
    threshold: the level of the time-to-threshold table (default: the objective's, if it has one)."""
    done = sweep.complete()
    arms = sweep.arms()
    reference, ref_of = resolve_reference(sweep, baseline)
    metrics, corpora = _metrics(sweep, done)
    comparison = _comparison(sweep, done, arms, ref_of, metrics, decisions=not baseline, ci=ci, seed=seed, alpha=alpha)
    findings = _findings(sweep, comparison, arms, ref_of, metrics, alpha)
    best_arm, best_run = _best(sweep, done, comparison)
    needle_cells, needle_k, needle_wrong = tables.needle_tables(done)
    curve_key = validation_key(sweep.objective) if sweep.objective else "val/loss"
    not_complete = sweep.trials.filter(pl.col("state") != "complete").select(
        "trial", "arm", "seed", "state", "status", "failure"
    )
    return Report(
        sweep=sweep,
        reference=reference,
        arms=arms,
        metrics=metrics,
        comparison=comparison,
        findings=findings,
        warnings=_warnings(sweep, done, arms),
        not_complete=not_complete,
        cost=tables.cost_table(done, arms, ref_of),
        needle_cells=needle_cells,
        needle_k=needle_k,
        needle_wrong=needle_wrong,
        corpora=corpora,
        curves=tables.learning_curves(histories, curve_key, done),
        equal_compute=tables.equal_compute(histories, curve_key, done, ref_of),
        time_to_threshold=_time_to_threshold(sweep, histories, curve_key, done, threshold),
        curve_key=curve_key,
        best_arm=best_arm,
        best_run_id=best_run,
        ci=ci,
        alpha=alpha,
    )


def _comparison(sweep: Sweep, done, arms, ref_of, metrics, decisions: bool, **test) -> pl.DataFrame:
    """stats.compare_arms for every metric, stacked, with each arm's factor and level; the objective's rows carry the
    seeds-until-decided state when the sweep has that policy (and the reference is the sweep's own)."""
    parts = []
    for metric in metrics:
        direction = stats.direction_of(metric, sweep.objective, sweep.direction)
        parts.append(stats.compare_arms(done, metric, arms, ref_of, direction, **test))
    if parts and metrics[0] == sweep.objective and sweep.policy and ref_of and decisions:
        parts[0] = _with_decisions(parts[0], done, sweep, ref_of)
    levels = sweep.trials.group_by("arm").agg(pl.col("factor").first(), pl.col("level").first())
    if parts:
        comparison = pl.concat(parts, how="diagonal").join(levels, on="arm", how="left")
    else:
        comparison = stats.compare_arms(done, "", [], ref_of).with_columns(
            factor=pl.lit(None, pl.String), level=pl.lit(None, pl.String)
        )
    return comparison.select("metric", "arm", "factor", "level", pl.exclude("metric", "arm", "factor", "level"))


def _findings(sweep: Sweep, comparison: pl.DataFrame, arms, ref_of, metrics, alpha: float) -> list[str]:
    """One sentence per (headline metric, compared arm): the objective's verdicts, then the exploratory ones."""
    if not ref_of:
        return (
            ["No reference arm (pass --baseline ARM): arms are summarised but not tested against one."] if arms else []
        )
    findings = []
    tested = (pl.col("arm") != pl.col("ref")) & (pl.col("ref") != "")
    for metric in [m for m in dict.fromkeys([sweep.objective, *HEADLINE]) if m in metrics]:
        for row in comparison.filter((pl.col("metric") == metric) & tested).iter_rows(named=True):
            if row.get("state") is not None:
                findings.append(stats.sequential_verdict(row, row["ref"], metric, sweep.policy | {"test": sweep.test}))
            elif metric == sweep.objective:
                findings.append(stats.verdict(row, row["ref"], metric, alpha))
            else:
                findings.append("Exploratory (not the objective): " + stats.verdict(row, row["ref"], metric, alpha))
    return findings


def _time_to_threshold(sweep: Sweep, histories, key: str, done: pl.DataFrame, given: float | None) -> dict | None:
    level = threshold_for(sweep.objective, given)
    if level is None:
        return None
    per_run, per_arm = time_to_threshold(histories, key, done, level, sweep.direction)
    return {"threshold": level, "per_run": per_run, "per_arm": per_arm}


def _with_decisions(rows: pl.DataFrame, done: pl.DataFrame, sweep: Sweep, ref_of: dict[str, str]) -> pl.DataFrame:
    """The objective's rows with the seeds-until-decided state of each comparison and the n it was decided at."""
    diffs = {}
    for arm, ref in ref_of.items():
        if ref and arm != ref:
            own, other = stats.arm_values(done, sweep.objective, arm), stats.arm_values(done, sweep.objective, ref)
            joined = own.join(other, on="seed", suffix="_ref").sort("seed")
            diffs[arm] = (joined["value"] - joined["value_ref"]).to_list()
    policy = SeedPolicy(**sweep.policy)
    decisions = decide(diffs, policy, sweep.direction, sweep.test.split()[0])
    states = [decisions[a].state if a in decisions else None for a in rows["arm"]]
    at = [decisions[a].decided_at if a in decisions else None for a in rows["arm"]]
    t_test = sweep.test.split()[0] == "t"  # the estimate is a t-test's: none for onset / rate sign tests
    need = {arm: _rule_seeds(d, policy, len(diffs)) if t_test else None for arm, d in diffs.items()}
    return rows.with_columns(
        pl.Series("state", states, pl.String),
        pl.Series("decided_at", at, pl.Int64),
        pl.Series("seeds_rule", [need.get(a) for a in rows["arm"]], pl.String),
    )


def _rule_seeds(d: list[float], policy, arms: int) -> str | None:
    """Seeds the sweep's rule (with Holm over `arms`) would need for 80% power at this comparison's effect, a range."""
    import numpy as np

    values = np.asarray(d, dtype=float)
    if values.size < 2 or not values.std(ddof=1) > 0:
        return None
    needed = seeds_to_decide(values.mean(), values.std(ddof=1), values.size, policy.alpha, arms, policy)
    return seeds_range(needed) or None


def _best(sweep: Sweep, done: pl.DataFrame, comparison: pl.DataFrame) -> tuple[str | None, str | None]:
    """The arm with the best mean objective, and its best seed's run id."""
    objective = sweep.objective
    rows = comparison.filter((pl.col("metric") == objective) & pl.col("mean").is_not_nan())
    if rows.is_empty():
        return None, None
    descending = sweep.direction == "maximize"
    arm = rows.sort("mean", descending=descending)["arm"][0]
    runs = done.filter(pl.col("arm") == arm).drop_nulls(objective).sort(objective, descending=descending)
    return arm, (runs["run_id"][0] if runs.height else None)


def headline_table(report: Report) -> pl.DataFrame:
    """One row per arm: n, objective mean and CI, difference to the reference, Holm p, verdict word, cost ratio."""
    objective = report.sweep.objective
    rows = report.comparison.filter(pl.col("metric") == objective)
    cost = report.cost.select("arm", *(["step_rel"] if "step_rel" in report.cost.columns else []))
    if "state" in rows.columns:  # seeds until decided: the rule's state is the verdict
        return rows.join(cost, on="arm", how="left").with_columns(
            pl.when(pl.col("arm") == pl.col("ref"))
            .then(pl.lit("reference"))
            .otherwise(pl.col("state").fill_null("no test"))
            .alias("verdict")
        )
    out = rows.join(cost, on="arm", how="left").with_columns(
        pl.when(pl.col("arm") == pl.col("ref"))
        .then(pl.lit("reference"))
        .when(pl.col("n_pairs") < 2)
        .then(pl.lit("no test (n<2)"))
        .when(pl.col("p_t_holm").is_nan())
        .then(pl.lit("undefined"))
        .when(pl.col("significant") & pl.col("better"))
        .then(pl.lit("better"))
        .when(pl.col("significant"))
        .then(pl.lit("worse"))
        .otherwise(pl.lit("not significant"))
        .alias("verdict")
    )
    return out
