"""The statistics against values computed by hand (closed forms of the t distribution with 2 degrees of freedom)."""

import math
import statistics

import numpy as np
import polars as pl
import pytest

from dashboards import stats


def t975_df2() -> float:
    """Quantile 0.975 of Student t with 2 df: t_p = (2p - 1) / sqrt(2 p (1 - p))."""
    p = 0.975
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def two_sided_p_df2(t: float) -> float:
    """P(|T| > |t|) for 2 df: the CDF is 1/2 + t / (2 sqrt(2 + t^2))."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def test_t_interval_matches_the_closed_form():
    x = [9.0, 9.5, 11.0]
    got = stats.mean_ci(np.array(x))
    mean, sd = statistics.fmean(x), statistics.stdev(x)
    half = t975_df2() * sd / math.sqrt(3)
    assert (got.n, got.method) == (3, "t")
    assert got.mean == pytest.approx(mean, abs=1e-12)
    assert got.std == pytest.approx(sd, abs=1e-12)
    assert (got.lo, got.hi) == pytest.approx((mean - half, mean + half), abs=1e-9)


def test_one_seed_has_no_interval_and_nan_values_are_ignored():
    got = stats.mean_ci(np.array([3.0, math.nan]))
    assert got.n == 1 and got.mean == 3.0
    assert math.isnan(got.std) and math.isnan(got.lo) and math.isnan(got.hi)
    assert stats.mean_ci(np.array([])).n == 0


def test_bootstrap_interval_is_seeded_and_is_the_percentile_interval():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    a = stats.mean_ci(x, method="bootstrap", seed=7, reps=2000)
    b = stats.mean_ci(x, method="bootstrap", seed=7, reps=2000)
    assert a == b
    rng = np.random.default_rng(7)
    means = x[rng.integers(0, 4, size=(2000, 4))].mean(axis=1)
    assert (a.lo, a.hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert x.min() <= a.lo < a.mean < a.hi <= x.max()


def test_paired_t_wilcoxon_and_effect_size_by_hand():
    reference, arm = np.array([10.0, 11.0, 12.0]), np.array([9.0, 9.5, 11.0])
    got = stats.paired_test(arm, reference)
    d = [-1.0, -1.5, -1.0]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    t = mean / (sd / math.sqrt(3))
    assert t == pytest.approx(-7.0)
    assert got.n == 3
    assert got.diff_mean == pytest.approx(-7 / 6)
    assert got.t == pytest.approx(t)
    assert got.p_t == pytest.approx(two_sided_p_df2(t), abs=1e-9)
    half = t975_df2() * sd / math.sqrt(3)
    assert (got.diff_lo, got.diff_hi) == pytest.approx((mean - half, mean + half))
    assert got.d_z == pytest.approx(mean / sd)
    assert got.rel_diff == pytest.approx((-7 / 6) / 11)
    # Wilcoxon, exact: all three differences negative is 1 of 2^3 sign patterns; two-sided doubles it.
    assert got.p_wilcoxon == pytest.approx(2 / 8)


def test_paired_test_degenerate_cases():
    same = stats.paired_test(np.array([1.0, 2.0]), np.array([1.0, 2.0]))
    assert same.diff_mean == 0 and math.isnan(same.p_t) and math.isnan(same.p_wilcoxon)
    one = stats.paired_test(np.array([1.0]), np.array([2.0]))
    assert one.n == 1 and one.diff_mean == -1 and math.isnan(one.p_t)


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, math.nan]
    # sorted: 0.01*3, max(0.03*2, .), max(0.04*1, 0.06) -> 0.03, 0.06, 0.06
    assert stats.holm(p)[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(stats.holm(p)[3])
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_compare_arms_with_one_seed_says_no_test_is_possible():
    trials = pl.DataFrame({"arm": ["base", "mta"], "seed": [0, 0], "m": [2.0, 1.0]})
    rows = stats.compare_arms(trials, "m", ["base", "mta"], reference="base")
    mta = rows.row(1, named=True)
    assert mta["n"] == 1 and mta["n_pairs"] == 1 and mta["diff"] == -1.0
    assert math.isnan(mta["ci_lo"]) and math.isnan(mta["p_t_holm"]) and not mta["significant"]
    assert "no test or CI possible with one seed" in stats.verdict(mta, "base", "m")


def test_directions_and_pareto_front():
    assert stats.direction_of("final/ppl") == "minimize"
    assert stats.direction_of("needle/accuracy") == "maximize"
    assert stats.direction_of("needle/wrong_needle") == "minimize"
    assert stats.direction_of("custom", "custom", "maximize") == "maximize"
    points = np.array([[1.0, 5.0], [2.0, 3.0], [3.0, 4.0], [4.0, 1.0]])
    assert stats.pareto_front(points).tolist() == [True, True, False, True]


def test_a_rate_s_confidence_interval_stays_within_0_and_1():
    trials = pl.DataFrame({"arm": ["a", "a"], "seed": [0, 1], "toy/error": [0.02, 0.9], "final/ppl": [1.02, 1.9]})
    rate = stats.compare_arms(trials, "toy/error", ["a"]).row(0, named=True)
    assert rate["ci_lo"] == 0.0 and rate["ci_hi"] == 1.0  # the t interval with n=2 is about [-5.1, 6.0]
    one = stats.compare_arms(trials.head(1), "toy/error", ["a"]).row(0, named=True)
    assert math.isnan(one["ci_lo"]) and math.isnan(one["ci_hi"])  # one seed: no interval, not [0, 1]
    ppl = stats.compare_arms(trials, "final/ppl", ["a"]).row(0, named=True)
    assert ppl["ci_lo"] < 0.0 and ppl["ci_hi"] > 1.0  # not a rate: left as computed
