"""Statistics over seeds: pure functions on numpy arrays and polars frames, with an explicit seed where random.

Conventions (stated in every report):
- Per arm: mean, sample standard deviation (ddof=1), n seeds, and a 95% confidence interval of the mean, either
  Student t (`mean +- t_{0.975, n-1} * sd / sqrt(n)`, the default) or a percentile bootstrap over seeds
  (`reps` resamples drawn with `np.random.default_rng(seed)`). n = 1 gives no interval (NaN).
- Against the reference arm: differences `arm - reference` paired by seed (only seeds both arms completed),
  paired t-test and Wilcoxon signed-rank test (two-sided, scipy), Holm's step-down correction across the arms
  compared on the same metric, and the effect size Cohen's d_z = mean(diff) / sd(diff).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from mta_ablate import metrics
from mta_ablate.power import seeds_range, seeds_to_decide

CI_METHODS = ("t", "bootstrap")


@dataclass(frozen=True)
class Interval:
    """Mean, sd, n and a confidence interval of the mean over seeds. NaN where undefined (n < 2 for sd/CI)."""

    mean: float
    std: float
    n: int
    lo: float
    hi: float
    method: str


def direction_of(metric: str, objective: str = "", objective_direction: str = "minimize") -> str:
    """'minimize' or 'maximize' for a metric key: the sweep's own direction for its objective, else the registry's."""
    if metric == objective and objective_direction in ("minimize", "maximize"):
        return objective_direction
    return metrics.direction(metric)


def mean_ci(
    values: np.ndarray, confidence: float = 0.95, method: str = "t", seed: int = 0, reps: int = 10_000
) -> Interval:
    """values: (seeds,) one number per seed. NaNs are ignored. Returns the mean and its confidence interval."""
    from scipy import stats

    if method not in CI_METHODS:
        raise ValueError(f"method={method!r}: expected one of {CI_METHODS}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan, method)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan, math.nan, method)
    sd = float(x.std(ddof=1))
    if method == "t":
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
        return Interval(mean, sd, n, mean - half, mean + half, method)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(reps, n))].mean(axis=1)  # (reps,) resampled means
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Interval(mean, sd, n, float(lo), float(hi), method)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order. NaN inputs stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    valid = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, math.nan)
    m = valid.size
    running = 0.0
    for rank, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[index]))
        out[index] = running
    return out.tolist()


@dataclass(frozen=True)
class Paired:
    """One arm against the reference on one metric, paired by seed."""

    n: int
    """Number of seeds both arms completed."""
    diff_mean: float
    """mean(arm - reference), in the metric's units."""
    diff_lo: float
    diff_hi: float
    """t interval (95%) of the mean difference; NaN for n < 2."""
    rel_diff: float
    """diff_mean / mean(reference on the paired seeds)."""
    t: float
    p_t: float
    """Paired t-test, two-sided; NaN for n < 2 or when every difference is equal."""
    p_wilcoxon: float
    """Wilcoxon signed-rank, two-sided, exact for small n; NaN for n < 2 or when every difference is 0."""
    d_z: float
    """Cohen's d_z = mean(diff) / sd(diff, ddof=1)."""


def paired_test(arm: np.ndarray, reference: np.ndarray, confidence: float = 0.95) -> Paired:
    """arm, reference: (pairs,) values of the same seeds in the same order."""
    from scipy import stats

    a, r = np.asarray(arm, dtype=float), np.asarray(reference, dtype=float)
    keep = ~(np.isnan(a) | np.isnan(r))
    a, r = a[keep], r[keep]
    d = a - r
    n = int(d.size)
    nan = math.nan
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan, nan, nan, nan)
    diff_mean = float(d.mean())
    ref_mean = float(r.mean())
    rel = diff_mean / ref_mean if ref_mean else nan
    if n == 1:
        return Paired(1, diff_mean, nan, nan, rel, nan, nan, nan, nan)
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    if sd > 0:
        t = diff_mean / (sd / math.sqrt(n))
        p_t = float(2 * stats.t.sf(abs(t), n - 1))
        d_z = diff_mean / sd
    else:
        t = p_t = d_z = nan
    p_w = nan
    if np.any(d != 0):
        try:
            p_w = float(stats.wilcoxon(d, alternative="two-sided").pvalue)
        except ValueError:
            p_w = nan
    return Paired(n, diff_mean, diff_mean - half, diff_mean + half, rel, t, p_t, p_w, d_z)


def arm_values(trials: pl.DataFrame, metric: str, arm: str) -> pl.DataFrame:
    """(seed, value) of one arm's trials for one metric, sorted by seed; rows without the metric dropped."""
    if metric not in trials.columns:
        return pl.DataFrame(schema={"seed": pl.Int64, "value": pl.Float64})
    rows = trials.filter((pl.col("arm") == arm) & pl.col(metric).is_not_null() & pl.col(metric).is_not_nan())
    return rows.select("seed", pl.col(metric).alias("value")).sort("seed")


def compare_arms(
    trials: pl.DataFrame,
    metric: str,
    arms: list[str],
    reference: str | Mapping[str, str] = "",
    direction: str = "minimize",
    ci: str = "t",
    seed: int = 0,
    alpha: float = 0.05,
) -> pl.DataFrame:
    """Per arm on one metric: summary over seeds, paired test against its reference, Holm across the tested arms.

    reference: one arm for all, or arm -> its own reference arm (a grid compared within the levels of its other
    factors); an arm that is its own reference, or has none, is not tested.
    trials: complete trials, one row per (arm, seed). Returns one row per arm (in `arms` order) with columns
    metric, arm, ref (its reference arm, "" if none), n, mean, std, ci_lo, ci_hi, ci_method, n_pairs, diff,
    diff_lo, diff_hi, rel_diff, t, p_t, p_wilcoxon, d_z, p_t_holm, p_wilcoxon_holm, significant (bool:
    Holm-adjusted paired t p < alpha), better (bool: the difference points the better way for `direction`; null
    for a reference).
    """
    ref_of = dict.fromkeys(arms, reference) if isinstance(reference, str) else dict(reference)
    rows = []
    for arm in arms:
        own = arm_values(trials, metric, arm)
        interval = mean_ci(own["value"].to_numpy(), method=ci, seed=seed)
        ref_arm = ref_of.get(arm) or ""
        row = {"metric": metric, "arm": arm, "ref": ref_arm, "n": interval.n, "mean": interval.mean}
        lo, hi = interval.lo, interval.hi
        if metrics.is_rate(metric) and not math.isnan(lo):  # NaN (one seed) stays NaN
            lo, hi = max(0.0, lo), min(1.0, hi)
        row |= {"std": interval.std, "ci_lo": lo, "ci_hi": hi, "ci_method": ci}
        paired = Paired(0, *([math.nan] * 8))
        if ref_arm and arm != ref_arm:
            joined = own.join(arm_values(trials, metric, ref_arm), on="seed", suffix="_ref")
            paired = paired_test(joined["value"].to_numpy(), joined["value_ref"].to_numpy())
        diff_lo, diff_hi = paired.diff_lo, paired.diff_hi
        if metrics.is_rate(metric) and not math.isnan(diff_lo):  # a difference of two rates lies in [-1, 1]
            diff_lo, diff_hi = max(-1.0, diff_lo), min(1.0, diff_hi)
        row |= {"n_pairs": paired.n, "diff": paired.diff_mean, "diff_lo": diff_lo, "diff_hi": diff_hi}
        row |= {"rel_diff": paired.rel_diff, "t": paired.t, "p_t": paired.p_t, "p_wilcoxon": paired.p_wilcoxon}
        row |= {"d_z": paired.d_z, "paired": paired}
        rows.append(row)
    tested = sum(1 for r in rows if r["ref"] and r["arm"] != r["ref"])
    for row in rows:
        row["seeds_80"] = _seeds_80(row.pop("paired"), alpha, tested)
    p_t_holm = holm([r["p_t"] for r in rows])
    p_w_holm = holm([r["p_wilcoxon"] for r in rows])
    for row, pt, pw in zip(rows, p_t_holm, p_w_holm, strict=True):
        row["p_t_holm"], row["p_wilcoxon_holm"] = pt, pw
        row["significant"] = bool(pt < alpha) if not math.isnan(pt) else False
        if math.isnan(row["diff"]) or row["arm"] == row["ref"]:
            row["better"] = None
        else:
            row["better"] = row["diff"] < 0 if direction == "minimize" else row["diff"] > 0
    schema = {"metric": pl.String, "arm": pl.String, "ref": pl.String, "n": pl.Int64, "ci_method": pl.String}
    schema |= {"n_pairs": pl.Int64, "seeds_80": pl.String}
    schema |= {"significant": pl.Boolean, "better": pl.Boolean}
    floats = ("mean", "std", "ci_lo", "ci_hi", "diff", "diff_lo", "diff_hi", "rel_diff", "t", "p_t", "p_wilcoxon")
    schema |= {c: pl.Float64 for c in (*floats, "d_z", "p_t_holm", "p_wilcoxon_holm")}
    columns = ["metric", "arm", "ref", "n", "mean", "std", "ci_lo", "ci_hi", "ci_method", "n_pairs", "diff", "diff_lo"]
    columns += ["diff_hi", "rel_diff", "t", "p_t", "p_wilcoxon", "d_z", "p_t_holm", "p_wilcoxon_holm"]
    columns += ["significant", "better", "seeds_80"]
    return pl.DataFrame(rows, schema={c: schema[c] for c in columns}, orient="row")


def _seeds_80(paired: Paired, alpha: float, arms: int = 1) -> str | None:
    """Paired seeds for 80% power with Holm over `arms`, as a range over the effect's 80% interval (`seeds_range`)."""
    if paired.n < 2 or math.isnan(paired.d_z) or paired.d_z == 0:
        return None
    needed = seeds_to_decide(paired.diff_mean, abs(paired.diff_mean / paired.d_z), paired.n, alpha, max(1, arms))
    return seeds_range(needed) or None


def verdict(row: dict, reference: str, metric: str, alpha: float = 0.05) -> str:
    """One sentence, in words, on one row of `compare_arms`: which way, by how much, significant or noise."""
    arm = row["arm"]
    if arm == reference:
        return f"{arm} is the reference."
    n = row["n_pairs"] or 0
    if n == 0:
        return f"{arm}: no seed in common with {reference}, no paired comparison."
    diff, rel = row["diff"], row["rel_diff"]
    change = f"{metric} {diff:+.4g}" + (f" ({rel:+.1%})" if rel == rel else "")
    if n == 1:
        return f"{arm} vs {reference}: {change} on 1 seed; no test or CI possible with one seed."
    p = row["p_t_holm"]
    if p != p:
        return f"{arm} vs {reference}: {change}, identical difference on all {n} seeds; the t-test is undefined."
    way = "better" if row["better"] else "worse"
    if row["significant"]:
        return (
            f"{arm} is significantly {way} than {reference}: {change}, paired t-test p={row['p_t']:.2g}, "
            f"Holm across arms p={p:.2g} < {alpha}, d_z={row['d_z']:.2f}, n={n} seeds."
        )
    need = row.get("seeds_80")
    more = (
        f" {need} paired seeds would give 80% power at this effect and spread (Holm over the compared arms; the range"
        " spans the effect's 80% interval, since an effect from few seeds is itself noise)."
        if need
        else ""
    )
    return (
        f"{arm} vs {reference}: {change}, not significant (paired t-test, Holm across arms p={p:.2g} >= {alpha}, "
        f"n={n} seeds): at this n the test cannot tell it from seed noise.{more}"
    )


def _looks(policy: dict) -> str:
    """How the rule shares alpha over its looks: calibrated by simulation, or the earlier weighted Bonferroni."""
    return "calibrated levels" if policy.get("rule") == "calibrated" else "weighted Bonferroni"


def sequential_verdict(row: dict, reference: str, metric: str, policy: dict) -> str:
    """One sentence on a comparison under the seeds-until-decided rule, naming that test."""
    arm, n, state, at = row["arm"], row["n_pairs"] or 0, row["state"], row["decided_at"]
    diff, rel = row["diff"], row["rel_diff"]
    change = (f"{metric} {diff:+.4g}" + (f" ({rel:+.1%})" if rel == rel else "")) if n else "no paired seed"
    margin = policy.get("margin")
    kind, *crossing = policy.get("test", "t").split()
    looks = f"over the looks at {policy['initial']}..{policy['max']} seeds, Holm across arms, alpha {policy['alpha']}"
    if kind == "t":
        test = f"sequential paired t-test ({_looks(policy)} {looks}" + (
            f"; equivalence: two one-sided tests, margin {margin:g})" if margin else ")"
        )
    else:
        what = "the step each seed first crossed" if kind == "onset" else "whether each seed's final value crossed"
        test = (
            f"sequential exact sign test on the pairs that differ ({what} {' '.join(crossing)}; "
            f"weighted Bonferroni {looks})"
        )
    if state in ("better", "worse"):
        return f"{arm} is {state} than {reference}: {change}, decided at n={at} seeds by the {test}."
    if state == "equivalent":
        return f"{arm} is equivalent to {reference} within +-{margin:g}: {change}, decided at n={at} by the {test}."
    where = "at the maximum" if n >= policy["max"] else "so far"
    need = row.get("seeds_rule") or row.get("seeds_80")
    more = (
        f" This rule, with Holm over the compared arms, would need {need} seeds for 80% power at this effect (the"
        f" range spans the effect's 80% interval); its max is {policy['max']}."
        if need
        else ""
    )
    return f"{arm} vs {reference}: {change}, undecided {where}, n={n}, by the {test}.{more}"


def pareto_front(points: np.ndarray) -> np.ndarray:
    """points: (n, 2) costs to minimise on both axes (flip the sign of a quantity to maximise).

    Returns a bool mask (n,): True where no other point is <= on both axes and < on one."""
    p = np.asarray(points, dtype=float)
    mask = np.ones(len(p), dtype=bool)
    for i in range(len(p)):
        if np.any(np.isnan(p[i])):
            mask[i] = False
            continue
        dominated = np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1)
        mask[i] = not bool(np.any(dominated))
    return mask
