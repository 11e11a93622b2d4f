"""End-to-end training on CPU into a real MLflow store (SQLite file + local artifacts under a temporary MTA_HOME)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mta_ablate.config.compose import load_experiment
from mta_ablate.tracking.mlflow_store import tracking_uri
from mta_ablate.trial import run_trial

QUICK = [
    "train.max_steps=30",
    "train.val_every=10",
    "train.log_every=5",
    "train.batch_size=16",
    "train.val_batches=2",
    "train.eval_batches=2",
    "train.warmup_steps=5",
    "train.lr=3e-3",
]


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


@pytest.mark.usefixtures("tracked_workspace")
@pytest.mark.parametrize("attention", ["baseline", "mta_toy"])
def test_toy_training_writes_one_complete_mlflow_run(workspace, attention, tmp_path):
    config = load_experiment(
        [f"attention={attention}", "attention.qk_pre=[2,7]" if attention == "mta_toy" else "seed=0", *QUICK]
    )
    result = run_trial(config)
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["mta.arm"] == config.arm and run.data.tags["mta.seed"] == "0"
    params = run.data.params
    assert params["train.max_steps"] == "30" and params["task.name"] == "find_block"
    assert int(params["model/params/mta"]) == (0 if attention == "baseline" else 2 * 2 * 2 * 7)  # 2 layers x H x 2x7
    loss = history(client, result.run_id, "train/loss")
    assert len(loss) >= 5 and len({s for s, _ in loss}) == len(loss)
    assert loss[-1][1] < loss[0][1], "training loss did not decrease"
    assert len(history(client, result.run_id, "val/loss")) == 3  # steps 10, 20, 30
    for key in ("final/loss", "final/error", "train/device/items_per_sec", "perf/peak_mem_mib", "perf/step_ms"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "environment.json"} <= artifacts
    assert ("mta_parameters.png" in artifacts) == (attention == "mta_toy")
    env = json.loads(Path(client.download_artifacts(result.run_id, "environment.json", str(tmp_path))).read_text())
    assert env["packages"]["torch"] and env["torch_threads"] >= 1
    assert env["cpu"] and env["cpu_capability"]  # what CPU reproducibility depends on


@pytest.mark.usefixtures("tracked_workspace")
def test_same_seed_same_result_different_seed_different(workspace):
    finals = [
        run_trial(load_experiment([*QUICK, "train.max_steps=12", f"seed={s}"])).metrics["final/loss"] for s in (1, 1, 2)
    ]
    assert finals[0] == finals[1]
    assert finals[0] != finals[2]


@pytest.mark.usefixtures("tracked_workspace")
def test_stray_mlflow_run_id_does_not_hijack_the_run(workspace, monkeypatch):
    client = MlflowClient(tracking_uri())
    other = client.create_run(client.create_experiment("other")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", other)
    result = run_trial(load_experiment([*QUICK, "train.max_steps=6"]))
    assert result.run_id != other
    assert client.get_run(other).data.metrics == {} and client.get_run(other).data.params == {}


@pytest.mark.usefixtures("tracked_workspace")
def test_killed_run_resumes_from_its_checkpoint_without_duplicate_steps(workspace):
    overrides = [*QUICK, "train.max_steps=200", "train.val_every=20", "train.log_every=2", "train.val_samples=8"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate", "train", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = workspace / "checkpoints" / "train" / "baseline-seed0"
    deadline = time.time() + 120
    while not list(checkpoints.glob("*/last.ckpt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.5)  # let it train past the checkpoint, so the resumed run repeats steps it had already logged
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    run_id = next(checkpoints.glob("*/last.ckpt")).parent.name
    client = MlflowClient(tracking_uri())
    assert client.get_run(run_id).info.status == "RUNNING"  # killed: nobody closed it

    resumed = run_trial(load_experiment([*overrides, "train.resume=true"]))
    assert resumed.run_id == run_id and resumed.steps == 200
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [s for s, _ in history(client, run_id, "train/loss")]
    assert len(steps) == len(set(steps)), "a step was logged twice"
    assert steps == list(range(steps[0], 201, 2))
    assert [s for s, _ in history(client, run_id, "val/loss")] == list(range(20, 201, 20))
    assert len(client.search_runs([client.get_experiment_by_name("train").experiment_id])) == 1
