"""`budget.equalize`: each arm's max_steps set so that it gets its reference's training FLOPs or wall time; step times
are measured side by side on this host when the sweep is created, stored with it, and shown by --dry-run."""

import json

import optuna
import pytest

from mta_ablate.sweep.compute import equalized_steps
from mta_ablate.sweep.parse import parse_sweep, read_sweep_file
from mta_ablate.sweep.study import ATTR_STEP_COST, ATTR_STEPS
from tests.cli import cli

Q = "sweeps/quickstart.yaml"


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize(("per", "column"), [("time", "ms/step"), ("flops", "GFLOP/step")])
def test_dry_run_shows_each_arms_step_cost_and_equalized_steps(per, column, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    done = cli("sweep", Q, "--dry-run", f"sweep.budget.equalize={per}")
    assert done.returncode == 0, done.stderr
    out = done.stdout.replace("\n", " ")
    assert column in out and "max_steps" in out and f"budget.equalize={per}" in out


def test_steps_follow_the_cost_ratio_to_the_reference():
    data = read_sweep_file(Q, ["sweep.budget.equalize=time"])
    spec = parse_sweep(data, ["sweep.budget.equalize=time"])
    ref = spec.reference_of[spec.arms[0].name]
    cost = {arm.name: 1.0 for arm in spec.arms} | {spec.arms[1].name: 2.0}
    steps = equalized_steps(spec, cost)
    reference_steps = spec.configs[ref].train.max_steps
    assert steps[ref] == reference_steps
    assert steps[spec.arms[1].name] == round(reference_steps / 2)


def test_a_time_equalized_sweep_stores_its_measured_step_times(workspace):
    done = cli("sweep", Q, "--workers", "0", "sweep.budget.equalize=time")
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{workspace / 'optuna.db'}")
    cost = json.loads(study.user_attrs[ATTR_STEP_COST])
    steps = json.loads(study.user_attrs[ATTR_STEPS])
    assert cost.pop("per") == "time" and set(cost) == set(steps) and all(s > 0 for s in cost.values())
    ref = next(a for a, r in parse_sweep(read_sweep_file(Q)).reference_of.items() if a == r)
    slower = [a for a in steps if cost[a] > cost[ref]]
    assert all(steps[a] <= steps[ref] for a in slower)  # a slower step buys fewer steps in the same time
