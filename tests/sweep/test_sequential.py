"""Seeds until decided: the sequential rule's error rates by simulation, and its decisions on hand-made data."""

import numpy as np
import pytest

from mta_ablate.sequential import SeedPolicy, decide, holm_reject, seeds_for_power, simulate

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
