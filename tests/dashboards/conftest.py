"""A real MLflow store (SQLite under tmp_path) holding a sweep logged exactly as the sweep conventions say.

The numbers are chosen so that means, CIs and p-values can be computed by hand in the tests (3 seeds: the t
distribution with 2 degrees of freedom has closed forms).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

BASELINE_PPL = {0: 10.0, 1: 11.0, 2: 12.0}
MTA_PPL = {0: 9.0, 1: 9.5, 2: 11.0}  # differences to baseline: -1.0, -1.5, -1.0
NO_MIX_PPL = {0: 10.5, 1: 10.5, 2: 12.5}  # differences to baseline: +0.5, -0.5, +0.5 (noise)
NEEDLE = {"baseline": 0.5, "mta_full": 0.75, "no_head_mix": 0.5}


def log_trial(client, exp_id, parent_id, sweep, arm, seed, trial, factor, level, metrics, state="complete", steps=3):
    """One child run: tags, params, histories of val/ppl at steps 10, 20, 30, then final metrics at the last step."""
    from mlflow.entities import Metric, Param

    tags = {
        "mta.kind": "trial",
        "mta.sweep": sweep,
        "mta.arm": arm,
        "mta.seed": str(seed),
        "mta.trial": str(trial),
        "mta.factor": factor,
        "mta.level": level,
        "mta.state": state,
        "mlflow.parentRunId": parent_id,
    }
    run = client.create_run(exp_id, run_name=f"{arm}-s{seed}", tags=tags)
    run_id = run.info.run_id
    params = {"model.dim": "64", "attention.qk_pre": "[6, 11]", "train.lr": "0.001", "task.name": "lm"}
    params |= {"model/params/total": str(1000 + (100 if arm != "baseline" else 0)), "model/params/mta": "100"}
    if arm == "baseline":
        params["model/params/mta"] = "0"
    client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
    now = int(time.time() * 1000)
    final = metrics.get("final/ppl")
    history = []
    for i in range(steps):
        value = (final or 20.0) + 2.0 * (steps - 1 - i)  # decreasing to the final value
        history.append(Metric("val/ppl", value, now, 10 * (i + 1)))
    last = 10 * steps
    history += [Metric(k, float(v), now, last) for k, v in metrics.items()]
    client.log_batch(run_id, metrics=history)
    status = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED", "running": "RUNNING"}[state]
    if state == "failed":
        client.set_tag(run_id, "mta.failure", "RuntimeError: CUDA out of memory")
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def arm_metrics(arm: str, seed: int, ppl: float) -> dict[str, float]:
    out = {
        "final/ppl": ppl,
        "final/ppl/books": ppl + 1.0,
        "final/ppl/code": ppl - 1.0,
        "val/ppl": ppl,
        "needle/accuracy": NEEDLE[arm],
        "perf/tokens_per_s": 1000.0 if arm == "baseline" else 800.0,
        "perf/step_ms": 100.0 if arm == "baseline" else 125.0,
        "perf/peak_mem_mib": 500.0 + seed,
    }
    for ctx in (64, 128):
        for k in (1, 2):
            out[f"needle/ctx{ctx}/k{k}/exact"] = NEEDLE[arm] / k
            out[f"needle/ctx{ctx}/k{k}/wrong_needle"] = (1.0 - NEEDLE[arm]) / 2 if k > 1 else 0.0
            for lo, hi in ((0, 50), (50, 100)):
                out[f"needle/ctx{ctx}/k{k}/depth{lo}-{hi}/exact"] = NEEDLE[arm] / k * (1.0 if lo == 0 else 0.5)
    return out


def _log_png(client, run_id: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mta_parameters.png"
        path.write_bytes(png_bytes())
        client.log_artifact(run_id, str(path))


def log_sweep(
    uri: str,
    artifacts: Path,
    name: str = "kernels",
    running: bool = False,
    extra_states: bool = True,
    seeds: tuple[int, ...] = (0, 1, 2),
) -> dict:
    """The sweep: 3 arms x seeds 0-2 (or those of `seeds`) complete, plus a failed and a pruned trial. Returns run ids
    by (arm, seed)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(name, artifact_location=(artifacts / name).resolve().as_uri())
    parent_tags = {
        "mta.kind": "sweep",
        "mta.sweep": name,
        "mta.design": "ablation",
        "mta.reference": "baseline",
        "mta.objective": "final/ppl",
        "mta.direction": "minimize",
        "mta.storage": "sqlite:///nowhere.db",
    }
    parent = client.create_run(exp_id, run_name=name, tags=parent_tags).info.run_id
    ids, trial = {}, 0
    arms = (
        ("baseline", "reference", "reference", BASELINE_PPL),
        ("mta_full", "attention", "mta", MTA_PPL),
        ("no_head_mix", "head_mix", "none", NO_MIX_PPL),
    )
    for arm, factor, level, ppl in arms:
        for seed, value in ppl.items():
            if seed not in seeds:
                continue
            ids[arm, seed] = log_trial(
                client, exp_id, parent, name, arm, seed, trial, factor, level, arm_metrics(arm, seed, value)
            )
            if arm != "baseline":  # MTA arms log their learned kernels (the best one is mta_full seed 0)
                _log_png(client, ids[arm, seed])
            trial += 1
    if extra_states:
        ids["mta_full", 3] = log_trial(
            client, exp_id, parent, name, "mta_full", 3, trial, "attention", "mta", {}, state="failed"
        )
        ids["no_head_mix", 3] = log_trial(
            client,
            exp_id,
            parent,
            name,
            "no_head_mix",
            3,
            trial + 1,
            "head_mix",
            "none",
            {"val/ppl": 30.0},
            state="pruned",
        )
    if not running:
        client.set_terminated(parent, "FINISHED")
    return {"parent": parent, "runs": ids, "experiment_id": exp_id}


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory):
    """One store for the read-mostly tests (a store costs seconds to create): a finished sweep `kernels` with a
    failed and a pruned trial, and a sweep `live` whose parent is still running. Returns (home, uri, ids)."""
    home = tmp_path_factory.mktemp("dashboards") / "mta-home"
    home.mkdir()
    uri = f"sqlite:///{home / 'mlflow.db'}"
    ids = log_sweep(uri, home / "mlartifacts")
    log_sweep(uri, home / "mlartifacts", name="live", running=True, extra_states=False)
    return home, uri, ids


@pytest.fixture
def store(shared_store, monkeypatch):
    """(uri, ids) of the shared store, with MTA_HOME pointing at it (so the CLI's default store is this one)."""
    home, uri, ids = shared_store
    monkeypatch.setenv("MTA_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return uri, ids


def png_bytes() -> bytes:
    """A small real PNG (stands in for the trial's learned-kernel figure)."""
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.subplots().imshow([[0.0, 1.0], [1.0, 0.0]], cmap="RdBu_r")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def log_search_sweep(uri: str, artifacts: Path, storage: str, name: str = "search", n: int = 12) -> dict:
    """A `search` design: an Optuna study `name` in `storage` with n trials over train.lr and attention.kernel,
    mirrored as MLflow child runs (arm t<i>, seed 0) under a parent tagged with that storage."""
    import random

    import optuna
    from mlflow.tracking import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    dists = {
        "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "attention.kernel": optuna.distributions.IntDistribution(3, 11, step=2),
    }
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(name, artifact_location=(artifacts / name).resolve().as_uri())
    tags = {"mta.kind": "sweep", "mta.sweep": name, "mta.design": "search", "mta.reference": ""}
    tags |= {"mta.objective": "final/ppl", "mta.direction": "minimize", "mta.storage": storage}
    parent = client.create_run(exp_id, run_name=name, tags=tags).info.run_id
    rng = random.Random(0)
    for i in range(n):
        lr, kernel = 10 ** rng.uniform(-4, -2), rng.choice([3, 5, 7, 9, 11])
        ppl = 10 + 100 * abs(lr - 0.003) + 0.01 * kernel  # lr matters, the kernel barely
        params = {"train.lr": lr, "attention.kernel": kernel}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=ppl))
        metrics = {"final/ppl": ppl, "perf/step_ms": 100.0 + kernel}
        log_trial(client, exp_id, parent, name, f"t{i}", 0, i, "", "", metrics)
    client.set_terminated(parent, "FINISHED")
    return {"parent": parent}
