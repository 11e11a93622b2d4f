"""How many paired seeds a comparison needs: for a fixed-n t-test (`seeds_for_power`), and as a range over the
uncertainty of an observed effect, under Holm and the seeds-until-decided rule (`seeds_to_decide`, `seeds_range`).
Read by the report and `mta-ablate plan --effect`. numpy/scipy only."""

from __future__ import annotations

import math

from mta_ablate.sequential import SeedPolicy


def seeds_for_power(diff_mean: float, diff_sd: float, alpha: float = 0.05, power: float = 0.8, cap: int = 1000):
    """Paired seeds a fixed-n two-sided t-test needs to reach `power` at the observed effect (None if beyond cap)."""
    from scipy import stats  # scipy loads when a count is asked for, as in `sequential`

    if not (diff_sd > 0) or diff_mean == 0 or math.isnan(diff_mean):
        return None
    effect = abs(diff_mean) / diff_sd
    for n in range(2, cap + 1):
        crit = stats.t.ppf(1 - alpha / 2, n - 1)
        if stats.nct.sf(crit, n - 1, effect * math.sqrt(n)) >= power:
            return n
    return None


def seeds_to_decide(
    diff_mean: float,
    diff_sd: float,
    n: int,
    alpha: float = 0.05,
    arms: int = 1,
    policy: SeedPolicy | None = None,
    power: float = 0.8,
    cap: int = 1000,
) -> tuple[int, int] | None:
    """Paired seeds after which a comparison is called different with probability `power`, as a range: the effect
    d = mean / sd estimated from n seeds is noise, so the range spans its 80% interval (seeds at the interval's
    strong end, at its weak end; cap + 1 means more than `cap`, also when the interval reaches 0). None when there
    is nothing to estimate from (fewer than 2 seeds, no spread).

    It accounts for Holm over `arms` compared arms (the first step's alpha / arms) and, with a seeds-until-decided
    `policy`, for the rule: a rule run to N seeds keeps at least N / (initial + ... + N) of that alpha for its last
    look (the Bonferroni share; the calibrated rule keeps more), so this is an upper bound on what the rule needs."""
    from scipy import stats

    if n < 2 or not (diff_sd > 0) or math.isnan(diff_mean):
        return None
    d = abs(diff_mean) / diff_sd
    se = math.sqrt(1 / n + d * d / (2 * (n - 1)))
    ends = (d + 1.2816 * se, d - 1.2816 * se)

    def needed(effect: float) -> int:
        if effect <= 0:
            return cap + 1
        for m in range(max(2, policy.initial if policy else 2), cap + 1):
            level = alpha / arms
            if policy is not None:
                level *= m / sum(range(policy.initial, m + 1))
            crit = stats.t.ppf(1 - level / 2, m - 1)
            if stats.nct.sf(crit, m - 1, effect * math.sqrt(m)) >= power:
                return m
        return cap + 1

    return needed(ends[0]), needed(ends[1])


def seeds_range(needed: tuple[int, int] | None, cap: int = 1000) -> str:
    """`5-60`, `5->1000` or `>1000` for a `seeds_to_decide` range; "" when there is none."""
    if needed is None:
        return ""
    lo, hi = (f">{cap}" if x > cap else str(x) for x in needed)
    return lo if lo == hi else f"{lo}-{hi}" if not hi.startswith(">") else f"{lo}->{cap}" if lo != f">{cap}" else lo
