"""Seeds until decided: a sequential paired comparison of arms against their references, with a stated guarantee.

    policy = SeedPolicy(initial=3, max=10, alpha=0.05, margin=0.01)
    states = decide({"mta": [-0.3, -0.2, -0.4]}, policy, "minimize")    # arm -> paired diffs (arm - ref) by seed
    states["mta"].state                                                   # better | worse | equivalent | undecided

The rule. Each comparison is looked at after every seed from `initial` to `max`. At look
n the paired t-test on the first n differences gives p(n) (two-sided), and with a margin, the two one-sided tests of
equivalence give q(n) = max of their p-values. A comparison's statistic is the min over its looks so far of
p(n) / w(n), where the look's share w(n) = n / (initial + ... + max) grows with its seeds.

Calibrated (`rule: calibrated`, what a sweep file's `seeds:` gets unless it says otherwise): the statistic is turned
into a sequential p-value by its own null distribution, P(min over all looks of p(n) / w(n) <= x), simulated once per
(initial, max) from 200,000 sequences of normal differences with a fixed seed (under the t model the statistic does
not depend on sigma, so one simulation serves every metric; the same numpy replays it exactly). Under the null the
sequential p-value is then uniform: the chance that a comparison is ever decided "different" when the arms do not
differ is alpha, not the 2.7% of the weighted Bonferroni union. For equivalence the null is the margin's edge, where
q(n) is a one-sided t p-value; its distribution is simulated the same way (conservative when the margin is small
against the noise).
Bonferroni (`rule: bonferroni`, sweeps created before the calibrated rule): the statistic itself is the sequential
p-value (P(it ever falls to x) <= x by the union bound), valid and conservative.

Holm's step-down over the compared arms then turns the sequential p-values into decisions at family-wise level
`alpha`, one family per kind: "different" (better or worse by the objective's direction) when the Holm-adjusted
sequential p <= alpha, "equivalent" when the same holds for q. For one arm only one kind of error is possible (its true
effect is 0 or outside the margin, not both), so a wrong decision about it has probability at most alpha; across
arms and both kinds the bound is 2 alpha. A decision never reverts (sequential p-values only fall as seeds are
added), and an arm gets another seed only while it is undecided and below `max`. Identical differences on every seed
(a saturated metric: both arms at 100% error) leave the t-test undefined and decide nothing. `simulate()` checks the
error rates on synthetic A/A data; the tests run it.

Pure numpy/scipy: the sweep workers (which add seeds), `status` and the report all call `decide`; `power` says how
many seeds a comparison would need.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

STATES = ("better", "worse", "equivalent", "undecided")
RULES = ("calibrated", "bonferroni")
CALIBRATION_SIMS = 200_000


@dataclass(frozen=True)
class SeedPolicy:
    """`seeds: {initial: 3, max: 10, alpha: 0.05, margin: null}` of a sweep file."""

    initial: int
    max: int
    alpha: float = 0.05
    margin: float | None = None
    """Equivalence margin, in the objective's own units (|mean difference| < margin counts as no difference)."""
    rule: str = "bonferroni"
    """calibrated | bonferroni. A sweep file's seeds get `calibrated`; a stored policy without a rule is from a
    sweep created before it, and replays as it was decided."""

    def share(self, n: int) -> float:
        """The weight of the look with n seeds: proportional to n, summing to 1 over the looks."""
        return n / sum(range(self.initial, self.max + 1))

    def calibrated(self, statistic: float, kind: str) -> float:
        """The sequential p-value of a statistic min p(n) / w(n) ("two": two-sided p, "one": equivalence)."""
        if self.rule != "calibrated" or math.isnan(statistic):
            return statistic
        null = null_statistics(self.initial, self.max)[kind]
        return (np.searchsorted(null, statistic, side="right") + 1) / (null.size + 1)

    def to_dict(self) -> dict:
        return {"initial": self.initial, "max": self.max, "alpha": self.alpha, "margin": self.margin, "rule": self.rule}


@functools.lru_cache(maxsize=16)
def null_statistics(initial: int, most: int) -> dict[str, np.ndarray]:
    """Sorted null samples of min over the looks n = initial..most of p(n) / w(n), for two-sided p-values ("two")
    and one-sided ones ("one"), from `CALIBRATION_SIMS` sequences of standard normal differences (seed 0)."""
    from scipy import stats

    d = np.random.default_rng(0).standard_normal((CALIBRATION_SIMS, most))
    total = sum(range(initial, most + 1))
    s1, s2 = np.zeros(CALIBRATION_SIMS), np.zeros(CALIBRATION_SIMS)
    two, one = np.full(CALIBRATION_SIMS, np.inf), np.full(CALIBRATION_SIMS, np.inf)
    for n in range(1, most + 1):  # look by look: a few vectors of CALIBRATION_SIMS at a time, whatever `most` is
        s1 += d[:, n - 1]
        s2 += d[:, n - 1] ** 2
        if n < initial:
            continue
        mean = s1 / n
        t = mean / (np.sqrt(np.maximum(s2 - n * mean**2, 1e-300) / (n - 1)) / math.sqrt(n))
        weight = n / total
        np.minimum(two, 2 * stats.t.sf(np.abs(t), n - 1) / weight, out=two)
        np.minimum(one, stats.t.sf(t, n - 1) / weight, out=one)
    return {"two": np.sort(two), "one": np.sort(one)}


@dataclass(frozen=True)
class Decision:
    state: str
    """better | worse | equivalent | undecided."""
    n: int
    """Paired seeds seen."""
    decided_at: int | None
    """The number of paired seeds at which the state was first reached (None while undecided)."""
    p_seq: float
    """Sequential p-value of "different" (before Holm across arms)."""
    q_seq: float
    """Sequential p-value of "equivalent" (NaN without a margin)."""
    open: bool
    """True while the comparison may still get a seed: undecided and n < max."""
    diff_mean: float = math.nan
    diff_sd: float = math.nan
    """Mean and sd of the paired differences seen (for the seeds a decision would need)."""


def t_pvalues(d: np.ndarray, margin: float | None) -> tuple[float, float]:
    """(two-sided paired t p-value of mean(d) = 0, TOST p-value of |mean(d)| >= margin) for differences d."""
    from scipy import stats

    n = d.size
    mean, sd = float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else math.nan
    if n < 2:
        return math.nan, math.nan
    if sd == 0:  # every difference equal (a saturated metric): the t-test is undefined, and nothing is decided
        return math.nan, math.nan
    se = sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1))
    q = math.nan
    if margin:
        q = float(max(stats.t.sf((mean + margin) / se, n - 1), stats.t.cdf((mean - margin) / se, n - 1)))
    return p, q


def sign_pvalue(d: np.ndarray) -> float:
    """Two-sided exact sign test of paired outcomes: among the pairs that differ (d != 0), are wins and losses equally
    likely? For `rate` (discordant pairs: McNemar's exact test) and `onset` (which seed crossed first; a pair where
    neither crossed, or both at the same step, is a tie). NaN while no pair differs."""
    from scipy import stats

    wins, differing = int((d > 0).sum()), int((d != 0).sum())
    if differing == 0:
        return math.nan
    return float(stats.binomtest(wins, differing, 0.5).pvalue)


def _sequential(d: np.ndarray, policy: SeedPolicy, test: str = "t") -> dict[int, tuple[float, float]]:
    """{n: (sequential p, sequential q) after the look at n paired seeds}, for n = initial .. min(len(d), max).
    The t-test's statistic is calibrated by the policy's rule; the sign test's (onset, rate: discrete p-values, for
    which the t model's calibration does not hold) is the weighted Bonferroni union, valid for any p-values."""
    p_stat, q_stat = math.inf, (math.inf if policy.margin else math.nan)
    out = {}
    for n in range(policy.initial, min(d.size, policy.max) + 1):
        p, q = t_pvalues(d[:n], policy.margin) if test == "t" else (sign_pvalue(d[:n]), math.nan)
        if not math.isnan(p):
            p_stat = min(p_stat, p / policy.share(n))
        if policy.margin and not math.isnan(q):
            q_stat = min(q_stat, q / policy.share(n))
        calibrate = policy.calibrated if test == "t" else (lambda stat, kind: stat)
        p_seq = min(1.0, calibrate(p_stat, "two")) if p_stat < math.inf else 1.0
        q_seq = (min(1.0, policy.calibrated(q_stat, "one")) if q_stat < math.inf else 1.0) if policy.margin else q_stat
        out[n] = (p_seq, q_seq)
    return out


def holm_reject(p_values: dict[str, float], alpha: float) -> set[str]:
    """The keys Holm's step-down procedure rejects at family-wise level alpha (NaN never rejects)."""
    ordered = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    rejected = set()
    for rank, (p, key) in enumerate(ordered):
        if p > alpha / (len(ordered) - rank):
            break
        rejected.add(key)
    return rejected


def decide(
    diffs: dict[str, list[float]], policy: SeedPolicy, direction: str = "minimize", test: str = "t"
) -> dict[str, Decision]:
    """arm -> Decision, from each arm's paired differences (arm - its reference), ordered by seed. `test`: t (paired
    t-test) or onset / rate (exact sign test on the pairs that differ; only their signs count).

    The rule is replayed look by look (every arm truncated to its first n pairs), and an arm keeps the first state
    it reached, so `decided_at` and the state are the same whether the rule runs live in a sweep (which stops adding
    seeds to a decided arm) or afterwards in a report."""
    arrays = {arm: np.asarray(d, dtype=float) for arm, d in diffs.items()}
    trails = {arm: _sequential(d, policy, test) for arm, d in arrays.items()}
    nan2 = (math.nan, math.nan)
    decided: dict[str, tuple[str, int]] = {}
    longest = max((a.size for a in arrays.values()), default=0)
    for upto in range(policy.initial, min(longest, policy.max) + 1):
        now = {arm: trail.get(min(upto, arrays[arm].size), nan2) for arm, trail in trails.items()}
        different = holm_reject({arm: p for arm, (p, _) in now.items()}, policy.alpha)
        same = holm_reject({arm: q for arm, (_, q) in now.items()}, policy.alpha)
        for arm in now:
            if arm in decided:
                continue
            n = min(upto, arrays[arm].size)
            if arm in different:
                seen = arrays[arm][:n]
                mean = seen.mean() if test == "t" else np.sign(seen).sum()  # sign tests: which way most pairs went
                decided[arm] = ("better" if (mean < 0) == (direction == "minimize") else "worse", n)
            elif arm in same:
                decided[arm] = ("equivalent", n)
    out = {}
    for arm, d in arrays.items():
        p, q = trails[arm][max(trails[arm])] if trails[arm] else nan2
        state, at = decided.get(arm, ("undecided", None))
        sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
        mean = float(d.mean()) if d.size else math.nan
        out[arm] = Decision(state, int(d.size), at, p, q, state == "undecided" and d.size < policy.max, mean, sd)
    return out


def simulate(effect: float, policy: SeedPolicy, sims: int = 2000, seed: int = 0) -> dict[str, float]:
    """Synthetic paired differences ~ Normal(effect, 1), seeds added while undecided, no training.

    Returns the rates of each final state and the mean number of seeds used, for one compared arm."""
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(STATES, 0)
    used = 0
    for _ in range(sims):  # one decide() on the whole sequence = the live rule: it keeps the first state reached
        decision = decide({"arm": rng.normal(effect, 1.0, size=policy.max).tolist()}, policy)["arm"]
        counts[decision.state] += 1
        used += decision.decided_at or policy.max
    return {**{k: v / sims for k, v in counts.items()}, "mean_seeds": used / sims}


def simulate_arms(effects: list[float], policy: SeedPolicy, sims: int = 2000, seed: int = 0) -> list[dict[str, float]]:
    """Several arms against one shared reference (seed s of arm i: a_is - r_s, each ~ Normal(., 1/2), so differences
    have sd 1 and correlate 0.5 across arms), decided together with Holm. Per arm: the rates of each final state."""
    rng = np.random.default_rng(seed)
    counts = [dict.fromkeys(STATES, 0) for _ in effects]
    any_different = 0
    for _ in range(sims):
        reference = rng.normal(0.0, math.sqrt(0.5), size=policy.max)
        diffs = {f"arm{i}": rng.normal(e, math.sqrt(0.5), size=policy.max) - reference for i, e in enumerate(effects)}
        states = decide({k: v.tolist() for k, v in diffs.items()}, policy)
        nulls = [f"arm{i}" for i, e in enumerate(effects) if e == 0]
        any_different += any(states[k].state in ("better", "worse") for k in nulls)
        for i in range(len(effects)):
            counts[i][states[f"arm{i}"].state] += 1
    rates = [{k: v / sims for k, v in c.items()} for c in counts]
    return [{**r, "any_null_different": any_different / sims} for r in rates]


def _table(sims: int) -> str:  # the README's expected-seeds table: python -m mta_ablate.sequential
    from scipy import stats

    policy = SeedPolicy(initial=3, max=10, alpha=0.05, margin=0.5, rule="calibrated")
    lines = [
        f"| effect (mean / sd of the paired difference) | decided different | decided equivalent (margin 0.5 sd) "
        f"| undecided at {policy.max} | mean seeds used | fixed n={policy.max} t-test power |",
        "|---|---|---|---|---|---|",
    ]
    for effect in (0.0, 0.5, 1.0, 2.0, 4.0):
        r = simulate(effect, policy, sims=sims, seed=1)
        crit = stats.t.ppf(1 - policy.alpha / 2, policy.max - 1)
        nc = effect * math.sqrt(policy.max)
        power = stats.nct.sf(crit, policy.max - 1, nc) + stats.nct.cdf(-crit, policy.max - 1, nc)
        power = 1.0 if math.isnan(power) else power  # the noncentral t underflows far from the null
        lines.append(
            f"| {effect:g} | {r['better'] + r['worse']:.1%} | {r['equivalent']:.1%} | {r['undecided']:.1%} "
            f"| {r['mean_seeds']:.1f} | {power:.1%} |"
        )
    for k in (3, 5):  # k arms sharing one reference, decided together (Holm across arms)
        null = simulate_arms([0.0] * k, policy, sims=sims, seed=2)[0]
        lines.append(f"| 0 on all {k} arms (shared reference): any arm | {null['any_null_different']:.1%} | | | | |")
        one = simulate_arms([1.0] + [0.0] * (k - 1), policy, sims=sims, seed=3)
        r = one[0]
        lines.append(
            f"| 1 on one of {k} arms, 0 on the others: that arm | {r['better'] + r['worse']:.1%} "
            f"| {r['equivalent']:.1%} | {r['undecided']:.1%} | | |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(_table(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
