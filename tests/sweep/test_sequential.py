"""Seeds until decided: the sequential rule's error rates by simulation, and its decisions on hand-made data."""

import numpy as np
import pytest

from mta_ablate.power import seeds_for_power
from mta_ablate.sequential import SeedPolicy, decide, holm_reject, simulate

POLICY = SeedPolicy(initial=3, max=10, alpha=0.05, margin=0.5)


def test_peeking_after_every_seed_keeps_the_false_different_rate_at_most_alpha():
    result = simulate(0.0, POLICY, sims=2000, seed=11)  # A/A: no true difference
    assert result["better"] + result["worse"] <= POLICY.alpha
    assert result["mean_seeds"] > POLICY.initial  # it did keep looking


def test_a_difference_at_the_margin_is_rarely_called_equivalent():
    result = simulate(0.5, POLICY, sims=1000, seed=12)  # exactly at the margin: "equivalent" would be false
    assert result["equivalent"] <= POLICY.alpha


def test_a_large_effect_is_decided_early_in_its_direction():
    result = simulate(4.0, POLICY, sims=300, seed=13)
    assert result["better"] + result["worse"] == 1.0 and result["mean_seeds"] < 5
    # positive differences are worse under minimize, better under maximize
    d = {"arm": [1.0, 1.2, 0.9, 1.1]}
    assert decide(d, POLICY, "minimize")["arm"].state == "worse"
    assert decide(d, POLICY, "maximize")["arm"].state == "better"


def test_decisions_record_when_they_were_reached_and_stay_put():
    noisy = [0.3, -0.2, 0.1, -2.0, -2.1, -1.9, -2.2, -2.0, -2.1, -1.8]  # undecided at 3, a clear effect later
    decision = decide({"arm": noisy}, POLICY)["arm"]
    assert decision.state == "better" and decision.decided_at is not None and decision.decided_at > 3
    assert not decision.open
    replay = decide({"arm": noisy[: decision.decided_at]}, POLICY)["arm"]
    assert (replay.state, replay.decided_at) == ("better", decision.decided_at)
    still = decide({"arm": noisy[:3]}, POLICY)["arm"]
    assert still.state == "undecided" and still.open and still.decided_at is None


def test_undecided_at_max_is_closed():
    rng = np.random.default_rng(0)
    decision = decide({"arm": rng.normal(0.0, 1.0, 10).tolist()}, SeedPolicy(3, 10))["arm"]
    assert decision.n == 10 and not decision.open


def test_holm_steps_down_across_arms():
    assert holm_reject({"a": 0.01, "b": 0.02, "c": 0.5}, 0.05) == {"a", "b"}
    assert holm_reject({"a": 0.02, "b": 0.02, "c": 0.02}, 0.05) == set()  # 0.02 > 0.05 / 3
    assert holm_reject({"a": float("nan"), "b": 0.001}, 0.05) == {"b"}


@pytest.mark.parametrize(("effect", "expected"), [(1.0, 10), (0.5, 34), (0.0, None)])
def test_seeds_for_power_matches_the_standard_paired_t_sample_sizes(effect, expected):
    assert seeds_for_power(effect, 1.0) == expected


CALIBRATED = SeedPolicy(initial=3, max=10, alpha=0.05, margin=0.5, rule="calibrated")


def test_the_calibrated_rule_spends_its_alpha_and_no_more():
    result = simulate(0.0, CALIBRATED, sims=4000, seed=21)
    different = result["better"] + result["worse"]
    assert 0.035 <= different <= 0.05 + 2 * (0.05 * 0.95 / 4000) ** 0.5, result  # Bonferroni's spends 2.7%


def test_the_calibrated_rule_decides_more_at_one_sd_with_no_extra_seeds():
    calibrated = simulate(1.0, CALIBRATED, sims=1000, seed=22)
    bonferroni = simulate(1.0, SeedPolicy(3, 10, 0.05, 0.5, rule="bonferroni"), sims=1000, seed=22)
    assert calibrated["worse"] + calibrated["better"] >= 0.63
    assert calibrated["worse"] > bonferroni["worse"] + 0.08
    assert calibrated["mean_seeds"] < bonferroni["mean_seeds"]


def test_the_calibrated_rule_keeps_holm_across_arms_that_share_a_reference():
    from mta_ablate.sequential import simulate_arms

    rates = simulate_arms([0.0, 0.0, 0.0], CALIBRATED, sims=1000, seed=23)
    assert rates[0]["any_null_different"] <= 0.05 + 2 * (0.05 * 0.95 / 1000) ** 0.5


def test_the_calibrated_rule_rarely_calls_the_margins_edge_equivalent():
    result = simulate(0.5, CALIBRATED, sims=1000, seed=24)
    assert result["equivalent"] <= 0.05 + 2 * (0.05 * 0.95 / 1000) ** 0.5


def test_a_stored_policy_replays_with_the_rule_it_was_decided_by():
    assert SeedPolicy(**CALIBRATED.to_dict()) == CALIBRATED
    old = {"initial": 3, "max": 10, "alpha": 0.05, "margin": 0.5}  # stored before the calibrated rule
    assert SeedPolicy(**old).rule == "bonferroni"
    diffs = {"arm": [-1.0, -1.4, -0.7, -1.2]}
    assert decide(diffs, SeedPolicy(**old))["arm"].p_seq > decide(diffs, CALIBRATED)["arm"].p_seq


def test_a_sweep_files_seeds_use_the_calibrated_rule_and_an_old_study_keeps_its_own():
    from mta_ablate.sweep.parse import parse_sweep, read_sweep_file
    from mta_ablate.sweep.study import ATTR_RULE, ATTR_SPEC, stored_rule

    spec = parse_sweep(read_sweep_file("sweeps/quickstart.yaml"), validate=False)
    assert spec.policy.rule == "calibrated"
    assert stored_rule(spec, {ATTR_SPEC: "{}"}).policy.rule == "bonferroni"  # created before the rule existed
    assert stored_rule(spec, {ATTR_SPEC: "{}", ATTR_RULE: "calibrated"}).policy.rule == "calibrated"
    assert stored_rule(spec, {}).policy.rule == "calibrated"  # a new sweep


def test_seeds_to_decide_knows_holm_and_the_rule_and_gives_a_range():
    from mta_ablate.power import seeds_range, seeds_to_decide

    exact = 10**6  # an effect known exactly: the range collapses to a point
    assert seeds_to_decide(1.0, 1.0, exact) == (10, 10)  # one fixed-n paired t-test at d = 1
    assert seeds_to_decide(1.0, 1.0, exact, arms=3) == (14, 14)  # Holm's first step over 3 arms
    rule = seeds_to_decide(1.0, 1.0, exact, policy=CALIBRATED)
    assert rule[0] > 10  # the rule spends part of alpha on its early looks
    low, high = seeds_to_decide(1.0, 1.0, 3, arms=3, policy=CALIBRATED)  # d from 3 seeds: noise
    assert low < 14 and high == 1001 and seeds_range((low, high)) == f"{low}->1000"
    assert seeds_to_decide(0.0, 1.0, 5)[1] == 1001  # no effect seen: the weak end needs more than any cap
    assert seeds_range((1001, 1001)) == ">1000" and seeds_range((12, 40)) == "12-40"
    assert seeds_to_decide(1.0, 0.0, 5) is None and seeds_range(None) == ""
