"""Objectives for outcomes that stall or not: `test: onset` decides on the step at which each seed's validation metric
first crosses a threshold (censored when it never does), `test: rate` on whether its final value does; both by an
exact sign test on the pairs that differ, with seeds until decided. Small toy trials: an arm that learns against one
that cannot (learning rate 1e-7), so each sweep reaches a decision. The rate sweep runs with its output piped, as a
batch job would: it must print a line per trial as it starts and ends."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mta_ablate.sweep import adaptive
from mta_ablate.sweep.study import load
from tests.cli import cli

BASE = {
    "train.max_steps": 40,
    "train.val_every": 10,
    "train.warmup_steps": 0,
    "train.eval_batches": 1,
    "train.val_batches": 1,
    "train.eval_samples": 4,
    "train.val_samples": 4,
}


def _sweep(tmp_path, test: str) -> str:
    data = {
        "name": f"{test}_sweep",
        "defaults": [{"model": "toy"}, {"attention": "baseline"}, {"task": "find_block"}, {"train": "cpu_quick"}],
        "base": BASE,
        # 3 to 4 seeds: all 4 pairs one way gives sign-test p = 0.125, under 0.45 x 4/7 at the last look
        "seeds": {"initial": 3, "max": 4, "alpha": 0.45, "reference": "frozen"},
        "objective": {"metric": "final/loss", "direction": "minimize", "test": test, "threshold": 3.5},
        "design": {
            "kind": "arms",
            "arms": [
                {"name": "frozen", "overrides": {"train.lr": 1.0e-7}},
                {"name": "learning", "overrides": {"train.lr": 3.0e-3}},
            ],
        },
    }
    path = tmp_path / f"{test}.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _piped(path: str, home) -> list[tuple[float, str]]:
    """The sweep as a batch job runs it, output piped: each line with the time it arrived."""
    env = {**os.environ, "MTA_HOME": str(home), "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "mta_ablate", "sweep", path, "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = [(time.monotonic(), line.rstrip()) for line in proc.stdout]  # as the sweep writes them
    assert proc.wait(timeout=600) == 0, "\n".join(text for _, text in lines)
    return [*lines, (time.monotonic(), "")]


@pytest.mark.parametrize(("test", "key"), [("onset", "objective/onset_step"), ("rate", "objective/crossed")])
def test_an_onset_or_rate_sweep_runs_to_a_decision(tracked_workspace, tmp_path, test, key):
    path = _sweep(tmp_path, test)
    if test == "rate":  # run piped, as in a log: a plain line per trial as it starts and ends, no table
        lines = _piped(path, tracked_workspace)
        ends = [(t, text) for t, text in lines if text.startswith("trial ") and " complete objective=" in text]
        assert len(ends) == 8 and all(" in " in text for _, text in ends), lines
        assert lines[-1][0] - ends[0][0] > 3, "the first trial's line came only at the end"
        assert any(text.startswith("trial ") and text.endswith(" running") for _, text in lines)
        assert not any("┃" in text for _, text in lines), "a table in a log"
        assert any(text.startswith("sweep rate_sweep: ") and "8 complete" in text for _, text in lines)
        worker_logs = "".join(p.read_text() for p in (tracked_workspace / "logs" / "rate_sweep").glob("*"))
        assert worker_logs.count(" complete objective=") == 8, worker_logs[-3000:]  # the workers' own lines
    else:
        done = cli("sweep", path, "--workers", "2")
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    study, spec, _, _ = load(f"{test}_sweep", f"sqlite:///{tracked_workspace / 'optuna.db'}")
    decision = adaptive.decisions(study, spec)["learning"]
    assert (decision.state, decision.n, decision.decided_at) == ("better", 4, 4)
    values = {(t.user_attrs["arm"], t.user_attrs["seed"]): t.value for t in study.trials if t.value is not None}
    if test == "onset":  # the learning arm crosses at a validation step; the frozen one never (censored at 41)
        assert all(values[("frozen", s)] == 41 for s in range(4))
        assert all(values[("learning", s)] in (10, 20, 30, 40) for s in range(4))
    else:
        assert [values[(a, s)] for a in ("frozen", "learning") for s in range(4)] == [0.0] * 4 + [1.0] * 4
    client = MlflowClient(f"sqlite:///{tracked_workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"{test}_sweep").experiment_id
    runs = client.search_runs([experiment])
    parent = next(r for r in runs if r.data.tags.get("mta.kind") == "sweep")
    assert parent.data.tags["mta.objective"] == key and parent.data.tags["mta.test"] == f"{test} final/loss 3.5"
    assert all(key in r.data.metrics for r in runs if r.data.tags.get("mta.kind") == "trial")
    out = tmp_path / "report"
    report = cli("report", f"{test}_sweep", "--out", out)
    assert report.returncode == 0, report.stderr[-2000:]
    text = (out / "report.md").read_text()
    assert "sequential exact sign test" in text and "learning is better than frozen" in text, text[:3000]
    assert json.loads(json.dumps(spec.threshold)) == 3.5


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        ({"test": "onset"}, "needs a finite number to cross"),
        ({"test": "median", "threshold": 1}, "allowed: t, onset, rate"),
        ({"threshold": 1}, "only for test: onset or rate"),
    ],
)
def test_onset_and_rate_objectives_are_checked(tmp_path, workspace, objective, message):
    data = yaml.safe_load(Path(_sweep(tmp_path, "rate")).read_text())
    data["objective"] = {"metric": "final/loss", "direction": "minimize", **objective}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    done = cli("sweep", tmp_path / "bad.yaml", "--dry-run")
    assert done.returncode == 2 and message in done.stderr, done.stderr
