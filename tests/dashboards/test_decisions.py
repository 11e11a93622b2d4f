"""The report of a sweep with seeds until decided: states, the n they were decided at, and the equal-compute view.

Numbers by hand: mta - baseline = -2.0, -2.1, -1.9 on seeds 0-2 (decided better at n=3); same - baseline = +0.1,
-0.1, +0.05, -0.05, 0.0 (equivalent within 0.5 at n=4: TOST t = 0.5 / (0.0913 / 2) = 10.95, p = 8e-4, divided by its
share of alpha 4 / (3 + 4 + 5) gives 0.0024 <= 0.05 / 2). Validation curves end at step 30, two units per 10 steps
above the final value; FLOPs per step: baseline 100, mta 125 (at the baseline's 3,000 FLOPs it is at step 24, 1.2
above its final value), same 80 (it would need step 37.5: not reached).
"""

import json

import polars as pl
import pytest

from dashboards.analysis import analyse, headline_table
from dashboards.export import export_report
from dashboards.load import load_histories, load_sweep
from tests.dashboards.conftest import log_trial

BASE = {0: 10.0, 1: 11.0, 2: 12.0, 3: 11.0, 4: 10.0}
DIFFS = {"mta": [-2.0, -2.1, -1.9], "same": [0.1, -0.1, 0.05, -0.05, 0.0]}
FLOPS = {"baseline": 100.0, "mta": 125.0, "same": 80.0}
POLICY = {"initial": 3, "max": 5, "alpha": 0.05, "margin": 0.5}


@pytest.fixture
def adaptive_store(workspace):
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    workspace.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("adaptive", artifact_location=(workspace / "art").resolve().as_uri())
    tags = {"mta.kind": "sweep", "mta.sweep": "adaptive", "mta.design": "arms", "mta.reference": "baseline"}
    tags |= {"mta.objective": "final/ppl", "mta.direction": "minimize", "mta.storage": "sqlite:///x.db"}
    parent = client.create_run(exp, run_name="adaptive", tags=tags).info.run_id
    refs = {"baseline": "baseline", "mta": "baseline", "same": "baseline"}
    client.log_batch(
        parent,
        params=[Param("sweep.seed_policy", json.dumps(POLICY)), Param("sweep.references", json.dumps(refs))],
    )
    values = {("baseline", s): v for s, v in BASE.items()}
    values |= {(arm, s): BASE[s] + d for arm, diffs in DIFFS.items() for s, d in enumerate(diffs)}
    for trial, ((arm, seed), value) in enumerate(values.items()):
        metrics = {"final/ppl": value, "perf/flops_per_step": FLOPS[arm], "perf/train_flops": 30 * FLOPS[arm]}
        log_trial(client, exp, parent, "adaptive", arm, seed, trial, "", "", metrics)
    client.set_terminated(parent, "FINISHED")
    return uri


def test_states_and_the_n_they_were_decided_at(adaptive_store):
    sweep = load_sweep("adaptive", adaptive_store)
    assert sweep.policy == POLICY and sweep.references["mta"] == "baseline"
    report = analyse(sweep, load_histories(sweep, ["val/ppl"]))
    head = {r["arm"]: r for r in headline_table(report).iter_rows(named=True)}
    assert (head["mta"]["verdict"], head["mta"]["decided_at"]) == ("better", 3)
    assert (head["same"]["verdict"], head["same"]["decided_at"]) == ("equivalent", 4)
    assert head["baseline"]["verdict"] == "reference"
    assert any("decided at n=3 seeds by the sequential paired t-test" in f for f in report.findings)
    assert not any("no complete trial for seed" in w for w in report.warnings)  # arms stop at different n by design


def test_equal_steps_and_equal_flops(adaptive_store):
    sweep = load_sweep("adaptive", adaptive_store)
    eq = {r["arm"]: r for r in analyse(sweep, load_histories(sweep, ["val/ppl"])).equal_compute.iter_rows(named=True)}
    assert eq["mta"]["steps_at_equal_flops"] == pytest.approx(24.0)
    assert eq["mta"]["diff_equal_steps"] == pytest.approx(-2.0)
    assert eq["mta"]["diff_equal_flops"] == pytest.approx(-0.8)
    assert eq["same"]["reached"] is False and eq["same"]["diff_equal_flops"] is None


def test_the_report_opens_with_what_was_learned(adaptive_store, tmp_path):
    export_report("adaptive", tmp_path / "rep", uri=adaptive_store, log_artifact=False)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.split("\n## ")[1].startswith("What was learned")
    assert "| decided at n |" in md and "Equal steps and equal compute" in md
    assert "n<3: none" not in md.split("## Headline")[1].split("##")[0]  # every arm has >= 3 seeds here
    summary = pl.read_csv(tmp_path / "rep" / "summary.csv")
    assert "seeds_80" in summary.columns


def test_compare_two_sweeps_that_share_arms(store, capsys):
    """`kernels` and `live` log the same arms and seeds with the same values: every difference is 0, paired by seed."""
    from mta_ablate.cli import main

    assert main(["compare", "kernels", "live", "--json"]) == 0
    rows = {r["arm"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"baseline", "mta_full", "no_head_mix"}
    assert rows["mta_full"]["n_a"] == rows["mta_full"]["n_b"] == 3
    assert rows["mta_full"]["diff"] == pytest.approx(0.0) and rows["mta_full"]["test"] == "paired t"
