"""Sweeps end to end on real stores: SQLite Optuna storage and SQLite MLflow store under a temporary MTA_HOME."""

import os
import signal
import subprocess
import sys
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from mta_ablate.sweep.slots import SKIPPED
from mta_ablate.sweep.study import storage_url
from mta_ablate.tracking.mlflow_store import tracking_uri
from tests.cli import cli

pytestmark = pytest.mark.usefixtures("tracked_workspace")

TINY = {
    "train.max_steps": 10,
    "train.val_every": 5,
    "train.batch_size": 8,
    "train.val_batches": 1,
    "train.eval_batches": 1,
    "train.val_samples": 8,
    "train.eval_samples": 16,
    "train.log_every": 5,
    "train.warmup_steps": 0,
}


def sweep_file(tmp_path, name, design, base=None, **extra):
    data = {
        "name": name,
        "defaults": [{"model": "toy"}, {"task": "find_block"}, {"train": "cpu_quick"}],
        "base": {**TINY, **(base or {})},
        "seeds": [0, 1],
        "heartbeat": {"interval_s": 1, "grace_s": 3},
        "objective": {"metric": "toy/error", "direction": "minimize"},
        "design": design,
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


THREE_ARMS = {
    "kind": "arms",
    "arms": [
        {"name": "baseline", "overrides": {"attention": "baseline"}},
        {"name": "k3", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 3]}},
        {"name": "k7", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 7]}},
    ],
}


def run_sweep(path, *args):
    """`mta-ablate sweep PATH ARGS`, the launcher in this process (see tests/cli.py), its workers as processes."""
    return cli("sweep", path, *args)


def trials(name):
    study = optuna.load_study(study_name=name, storage=storage_url())
    return [t for t in study.get_trials() if not t.user_attrs.get(SKIPPED)]


def children(name):
    client = MlflowClient(tracking_uri())
    exp = client.get_experiment_by_name(name).experiment_id
    runs = client.search_runs([exp])
    parents = [r for r in runs if r.data.tags.get("mta.kind") == "sweep"]
    return parents, [r for r in runs if r.data.tags.get("mta.kind") == "trial"]


def test_two_workers_complete_every_arm_and_seed_exactly_once(workspace, tmp_path):
    path = sweep_file(tmp_path, "three", THREE_ARMS)
    cmd = [sys.executable, "-m", "mta_ablate", "sweep", str(path), "--workers", "2"]  # the real command, once
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    done = trials("three")
    assert sorted((t.user_attrs["arm"], t.user_attrs["seed"]) for t in done) == sorted(
        (a, s) for a in ("baseline", "k3", "k7") for s in (0, 1)
    )
    assert all(t.state == TrialState.COMPLETE for t in done)
    parents, kids = children("three")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 6
    for run in kids:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tags["mta.sweep"] == "three" and tags["mta.state"] == "complete"
        assert {tags["mta.arm"], tags["mta.seed"]} <= {"baseline", "k3", "k7", "0", "1"}
        assert run.info.status == "FINISHED" and "toy/error" in run.data.metrics
    assert {t.user_attrs["mlflow_run_id"] for t in done} == {r.info.run_id for r in kids}
    status = cli("status", "three")
    assert status.returncode == 0 and "k7" in status.stdout and "complete" in status.stdout, status.stderr
    missing = cli("status", "nope")
    assert missing.returncode == 2 and "sweeps there: three" in missing.stderr
    # the sweep's report, from the store alone
    report = cli("report", "three", "--out", tmp_path / "r")
    assert report.returncode == 0, report.stderr[-2000:]
    for name in ("report.html", "report.md", "summary.csv", "trials.parquet"):
        assert (tmp_path / "r" / name).stat().st_size > 0, name
    # resuming a finished sweep runs nothing
    again = run_sweep(path)
    assert again.returncode == 0 and len(trials("three")) == 6


def test_killed_sweep_resumes_without_duplicates_or_gaps(workspace, tmp_path):
    two = {"kind": "arms", "arms": THREE_ARMS["arms"][:2]}
    path = sweep_file(tmp_path, "killed", two, base={"train.max_steps": 40, "train.val_every": 10})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate", "sweep", str(path), "--workers", "2"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until a trial has reported a validation step: it is mid-trial
        time.sleep(0.3)
        try:
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials("killed")):
                break
        except KeyError:
            continue
    os.killpg(proc.pid, signal.SIGKILL)  # launcher and both workers die at once
    proc.wait()
    assert any(t.state == TrialState.RUNNING for t in trials("killed"))

    result = run_sweep(path, "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    done = [t for t in trials("killed") if t.state == TrialState.COMPLETE]
    slots = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in done]
    assert sorted(slots) == sorted((a, s) for a in ("baseline", "k3") for s in (0, 1))
    _, kids = children("killed")
    finished = [r for r in kids if r.info.status == "FINISHED"]
    listing = [(t.number, t.state.name, t.user_attrs) for t in trials("killed")] + [
        (r.info.run_id, r.data.tags["mta.arm"], r.data.tags["mta.seed"], r.info.status) for r in kids
    ]
    assert sorted((r.data.tags["mta.arm"], r.data.tags["mta.seed"]) for r in finished) == sorted(
        (a, str(s)) for a, s in slots
    ), listing
    assert all(r.info.status in ("FINISHED", "FAILED") for r in kids), "a dead trial's run was left RUNNING"


def test_pruner_stops_a_clearly_worse_arm_and_nan_fails_without_stopping_the_sweep(workspace, tmp_path):
    design = {
        "kind": "arms",
        "arms": [
            {"name": "good", "overrides": {"train.lr": 0.003}},
            {"name": "frozen", "overrides": {"train.lr": 1.0e-9}},
            {"name": "nan", "overrides": {"train.lr": 1.0e30}},
        ],
    }
    path = sweep_file(
        tmp_path,
        "prune",
        design,
        base={"train.max_steps": 30, "train.val_every": 10},
        objective={"metric": "final/loss", "direction": "minimize"},
        pruner={"kind": "median", "startup_trials": 2, "warmup_steps": 0},
    )
    result = run_sweep(path, "--workers", "1")
    assert result.returncode == 1  # some trial failed
    by_arm = {}
    for t in trials("prune"):
        by_arm.setdefault(t.user_attrs["arm"], []).append(t)
    assert all(t.state == TrialState.COMPLETE for t in by_arm["good"])
    assert all(t.state == TrialState.PRUNED for t in by_arm["frozen"])
    assert all(t.state == TrialState.FAIL for t in by_arm["nan"])
    assert all(
        "loss is nan" in t.user_attrs["failure"] or "loss is inf" in t.user_attrs["failure"] for t in by_arm["nan"]
    )
    _, kids = children("prune")
    states = {
        (r.data.tags["mta.arm"], r.data.tags["mta.seed"]): (r.info.status, r.data.tags["mta.state"]) for r in kids
    }
    assert states[("frozen", "0")] == ("KILLED", "pruned")
    assert (
        states[("nan", "1")][0] == "FAILED"
        and "FloatingPointError" in [r for r in kids if r.data.tags["mta.arm"] == "nan"][0].data.tags["mta.failure"]
    )


@pytest.mark.parametrize("kind", ["search"])
def test_search_design_runs_its_budget(workspace, tmp_path, kind):
    design = {
        "kind": "search",
        "params": {
            "train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
            "attention.qk_pre": {"type": "categorical", "choices": [None, [2, 7]]},
        },
    }
    path = sweep_file(tmp_path, "search", design, seeds=[0], budget={"max_trials": 3}, sampler="random")
    assert run_sweep(path, "--workers", "1").returncode == 0
    done = trials("search")
    assert len(done) == 3 and all(t.state == TrialState.COMPLETE for t in done)
    assert all(1e-3 <= t.params["train.lr"] <= 1e-2 for t in done)


# SIGINT takes the same path as SIGTERM (one handler): it runs with the slow tests
@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_a_signal_to_the_sweep_alone_records_trials_as_interrupted_and_a_rerun_resumes_them(workspace, tmp_path, sig):
    """Ctrl-C, or SIGINT / SIGTERM to the sweep's PID only: no traceback, the running trials are recorded as
    interrupted (not as a dead worker's), the same command queues them again at once (no heartbeat wait), and the
    MLflow run a trial resumes loses its stale failure tag."""
    base = {"train.max_steps": 40, "train.val_every": 10}  # a checkpoint at every validation
    one = {"kind": "arms", "arms": THREE_ARMS["arms"][:1]}  # 2 seeds: both workers are mid-trial at the signal
    path = sweep_file(tmp_path, "stop", one, base=base, heartbeat={"interval_s": 10, "grace_s": 600})
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate", "sweep", str(path), "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            if any(t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2 for t in trials("stop")):
                break
        except KeyError:
            continue
    proc.send_signal(sig)  # the launcher alone, not its process group
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and "Traceback" not in err, err[-2000:]
    stopped = [t for t in trials("stop") if t.state == TrialState.FAIL]
    kinds = [(t.number, t.user_attrs.get("mta.failure_kind"), t.user_attrs.get("failure")) for t in stopped]
    assert stopped and all(kind == "interrupted" for _, kind, _ in kinds), kinds
    started = time.time()
    result = run_sweep(path, "--workers", "2")  # grace_s is 600: a rerun that waited for heartbeats would time out
    assert result.returncode == 0, result.stderr[-2000:]
    assert time.time() - started < 240
    done = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials("stop") if t.state == TrialState.COMPLETE]
    assert sorted(done) == [("baseline", 0), ("baseline", 1)]
    _, kids = children("stop")
    assert all("mta.failure" not in r.data.tags for r in kids if r.info.status == "FINISHED")
