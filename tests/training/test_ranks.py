"""Trials on 2 devices: 2 gloo processes on the CPU, real MLflow and Optuna stores, real kills."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mta_ablate.config.compose import load_experiment
from mta_ablate.tracking.mlflow_store import tracking_uri
from mta_ablate.trial import run_trial

pytestmark = pytest.mark.usefixtures("tracked_workspace")

TINY = [
    "attention=mta_toy",
    "attention.qk_pre=[2,7]",
    "train.max_steps=30",
    "train.val_every=10",
    "train.log_every=5",
    "train.batch_size=16",
    "train.val_batches=2",
    "train.eval_batches=2",
    "train.val_samples=16",
    "train.eval_samples=32",
    "train.warmup_steps=5",
    "train.threads=1",
]
TOLERANCE = 1e-4
"""Relative difference allowed between the 1- and 2-device runs of one config (docs/scale-out.md says why)."""


def history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def rank_processes(home: Path) -> list[int]:
    """Pids of child ranks (`python -m mta_ablate.rank_entry`) started under this test's MTA_HOME."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        if b"mta_ablate.rank_entry" in cmdline and f"MTA_HOME={home}".encode() in environ:
            pids.append(int(proc.name))
    return pids


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def test_two_devices_log_one_run_with_the_one_device_numbers(workspace):
    one = run_trial(load_experiment([*TINY, "tracking.experiment=one"]))
    two = run_trial(load_experiment([*TINY, "train.devices=2", "tracking.experiment=two"]))
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("two").experiment_id])
    assert [r.info.run_id for r in runs] == [two.run_id] and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["train.devices"] == "2"
    assert not rank_processes(workspace)
    for key in ("train/loss", "val/loss", "val/error"):
        a, b = history(client, one.run_id, key), history(client, two.run_id, key)
        assert [s for s, _ in a] == [s for s, _ in b], f"{key}: other steps, or a step logged twice"
        for (step, x), (_, y) in zip(a, b, strict=True):
            assert math.isclose(x, y, rel_tol=TOLERANCE, abs_tol=1e-6), f"{key} at step {step}: {x} vs {y}"
    assert set(one.metrics) == set(two.metrics)
    for key in ("final/loss", "toy/error"):
        assert math.isclose(one.metrics[key], two.metrics[key], rel_tol=TOLERANCE, abs_tol=1e-6), key
    assert math.isclose(one.metrics["perf/flops_per_step"], two.metrics["perf/flops_per_step"], rel_tol=1e-9)
    one_art = {f.path for f in client.list_artifacts(one.run_id)}
    assert one_art == {f.path for f in client.list_artifacts(two.run_id)}


def test_a_pruning_decision_on_rank_0_stops_every_rank(workspace):
    pruned_at = []

    def reporter(step, metrics):
        if step >= 20:
            pruned_at.append(step)
            exc = optuna.TrialPruned(f"pruned at step {step}")
            exc.mlflow_status, exc.mta_state = "KILLED", "pruned"
            raise exc

    config = load_experiment([*TINY, "train.max_steps=400", "train.devices=2"])
    started = time.time()
    with pytest.raises(optuna.TrialPruned):
        run_trial(config, reporter=reporter)
    assert pruned_at == [20] and time.time() - started < 120
    assert not rank_processes(workspace), "a rank outlived its pruned trial"
    client = MlflowClient(tracking_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.info.status == "KILLED" and run.data.tags["mta.state"] == "pruned"
    assert max(s for s, _ in history(client, run.info.run_id, "train/loss")) <= 20
    after = run_trial(load_experiment([*TINY, "train.devices=2", "tracking.run_name=next"]))  # as a worker goes on
    assert after.steps == 30 and client.get_run(after.run_id).info.status == "FINISHED"


@pytest.mark.slow  # the killed-rank test below also resumes a 2-device run from its checkpoint
def test_a_killed_two_device_trial_resumes_the_same_run(workspace):
    overrides = [*TINY, "train.max_steps=120", "train.devices=2", "train.log_every=2"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate", "train", *overrides],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    checkpoints = workspace / "checkpoints" / "train" / "mta_toy,qk_pre=[2,7]-seed0"
    wait_for(lambda: list(checkpoints.glob("*/last.ckpt")) or proc.poll() is not None, 180, "a checkpoint")
    assert proc.poll() is None, "the run ended before it could be killed"
    (child,) = rank_processes(workspace)
    os.kill(proc.pid, signal.SIGKILL)  # rank 0 only: rank 1 must not outlive it
    proc.wait()
    wait_for(lambda: not rank_processes(workspace), 10, f"rank 1 (pid {child}) to die with rank 0")
    run_id = next(checkpoints.glob("*/last.ckpt")).parent.name

    resumed = run_trial(load_experiment([*overrides, "train.resume=true"]))
    client = MlflowClient(tracking_uri())
    assert resumed.run_id == run_id and resumed.steps == 120
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [s for s, _ in history(client, run_id, "train/loss")]
    assert steps == list(range(steps[0], 121, 2)), "a step was logged twice, or is missing"
    assert len(client.search_runs([client.get_experiment_by_name("train").experiment_id])) == 1


def test_a_killed_rank_fails_the_trial_in_bounded_time_and_the_retry_completes_it_once(workspace, tmp_path):
    from mta_ablate.sweep.slots import FAILURE_KIND, RANK_LOST
    from mta_ablate.sweep.study import storage_url

    sweep = {
        "name": "ranks",
        "defaults": [{"model": "toy"}, {"task": "find_block"}, {"train": "cpu_quick"}],
        "base": {
            **dict(o.split("=", 1) for o in TINY[2:]),
            "train.max_steps": 60,
            "train.devices": 2,
            "train.rank_timeout_s": 60,
        },
        "seeds": [0],
        "heartbeat": {"interval_s": 1, "grace_s": 3},
        "objective": {"metric": "toy/error", "direction": "minimize"},
        "design": {"kind": "arms", "arms": [{"name": "mta", "overrides": {"attention": "mta_toy"}}]},
    }
    path = tmp_path / "ranks.yaml"
    path.write_text(yaml.safe_dump(sweep))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate", "sweep", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    checkpoints = workspace / "checkpoints" / "ranks" / "mta-seed0"
    wait_for(lambda: list(checkpoints.glob("*/last.ckpt")) or proc.poll() is not None, 240, "a checkpoint")
    assert proc.poll() is None, "the sweep ended before a rank could be killed"
    (child,) = rank_processes(workspace)
    os.kill(child, signal.SIGKILL)
    killed = time.time()
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()[-2000:]  # the lost rank's trial was retried and completed
    study = optuna.load_study(study_name="ranks", storage=storage_url())
    first, retry = study.get_trials()
    assert first.state.name == "FAIL" and first.user_attrs[FAILURE_KIND] == RANK_LOST
    assert "rank 1 killed by SIGKILL" in first.user_attrs["failure"]
    assert first.datetime_complete.timestamp() - killed < 30, "the lost rank was noticed late"
    assert retry.state.name == "COMPLETE" and retry.user_attrs["arm"] == "mta"
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("ranks").experiment_id], "tags.`mta.kind` = 'trial'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", "the retry resumes the same MLflow run"
    steps = [s for s, _ in history(client, runs[0].info.run_id, "train/loss")]
    assert len(steps) == len(set(steps)) and steps[-1] == 60
    assert not rank_processes(workspace)


@pytest.mark.slow
def test_a_trial_over_two_nodes_runs_on_a_cluster_leader_and_follower(workspace, tmp_path):
    """What `srun` or `torchrun` starts: one worker per rank (WORLD_SIZE, RANK, MASTER_ADDR/PORT); rank 0 claims the
    trial and hands it to rank 1. Here both "nodes" are this host."""
    from mta_ablate.ranks import free_port
    from mta_ablate.sweep.study import storage_url

    sweep = {
        "name": "nodes",
        "defaults": [{"model": "toy"}, {"task": "find_block"}, {"train": "cpu_quick"}],
        "base": {**dict(o.split("=", 1) for o in TINY[2:]), "train.num_nodes": 2},
        "seeds": [0],
        "objective": {"metric": "toy/error", "direction": "minimize"},
        "design": {"kind": "arms", "arms": [{"name": "mta", "overrides": {"attention": "mta_toy"}}]},
    }
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(sweep))
    cmd = [sys.executable, "-m", "mta_ablate", "sweep", str(path), "--workers", "0"]
    queued = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert queued.returncode == 0 and "1 trials left for workers started elsewhere" in queued.stdout, queued.stderr
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "mta_ablate", "worker", "nodes"],
            env={**env, "RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for rank in (1, 0)  # the follower may start first: it waits for the leader
    ]
    outs = [w.communicate(timeout=240)[0].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs[1][-2000:] + outs[0][-2000:]
    (trial,) = optuna.load_study(study_name="nodes", storage=storage_url()).get_trials()
    assert trial.state.name == "COMPLETE"
    client = MlflowClient(tracking_uri())
    runs = client.search_runs([client.get_experiment_by_name("nodes").experiment_id], "tags.`mta.kind` = 'trial'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.params["train.num_nodes"] == "2"
    closed = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert closed.returncode == 0 and "1 complete" in closed.stdout
