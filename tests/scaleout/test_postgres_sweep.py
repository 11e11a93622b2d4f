"""One sweep, several `mta-ablate worker` processes, on PostgreSQL and an MLflow server: the compose topology, natively.

Each test has its own Optuna database and its own `mlflow server` (PostgreSQL backend store, artifacts proxied into
a temporary folder, the compose file's --allowed-hosts); the sweep's parent run and every child run go through it.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from mta_ablate.sweep.parse import parse_sweep, read_sweep_file
from mta_ablate.sweep.slots import SKIPPED
from mta_ablate.sweep.study import SweepNotReady, create_or_resume, load
from tests.cli import cli
from tests.scaleout import compose
from tests.sweep.test_runner import sweep_file

SIX_ARMS = {
    "kind": "arms",
    "arms": [
        {"name": "baseline", "overrides": {"attention": "baseline"}},
        {"name": "baseline_lr3e-3", "overrides": {"attention": "baseline", "train.lr": 0.003}},
        {"name": "k3", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 3]}},
        {"name": "k5", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 5]}},
        {"name": "k7", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 7]}},
        {"name": "k7_lr3e-3", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 7], "train.lr": 0.003}},
    ],
}
ARMS = [a["name"] for a in SIX_ARMS["arms"]]
SLOTS = sorted((arm, seed) for arm in ARMS for seed in (0, 1))


def mta(*args: str, log=None, **env) -> subprocess.Popen:
    """`mta-ablate ARGS` as its own process (and process group), one torch thread (3 workers share 2 cores here);
    its output goes to the file `log`."""
    with open(log or os.devnull, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mta_ablate", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **env},
            start_new_session=True,
        )


def worker(name, storage, worker_id, log):
    return mta("worker", name, "--storage", storage, "--threads", "1", "--worker-id", worker_id, log=log)


def wait_all(procs, timeout_s: float) -> list[int]:
    deadline = time.time() + timeout_s
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            raise
    return codes


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def trials(name, storage):
    if storage not in _STORAGES:  # one engine per database, not one per poll
        _STORAGES[storage] = optuna.storages.RDBStorage(storage)
    study = optuna.load_study(study_name=name, storage=_STORAGES[storage])
    return [t for t in study.get_trials() if not t.user_attrs.get(SKIPPED)]


def complete_slots(name, storage):
    return sorted(
        (t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials(name, storage) if t.state == TrialState.COMPLETE
    )


def runs(name, tracking_uri):
    """(parent runs, child trial runs) of a sweep on the MLflow server."""
    client = MlflowClient(tracking_uri)
    found = client.search_runs([client.get_experiment_by_name(name).experiment_id], max_results=1000)
    return (
        [r for r in found if r.data.tags.get("mta.kind") == "sweep"],
        [r for r in found if r.data.tags.get("mta.kind") == "trial"],
    )


def finished_slots(kids):
    return sorted((r.data.tags["mta.arm"], int(r.data.tags["mta.seed"])) for r in kids if r.info.status == "FINISHED")


def create_sweep(tmp_path, name, storage, tracking_uri, design=SIX_ARMS, **base):
    """Create the study and parent run the way `mta-ablate sweep FILE` does, without starting a worker."""
    path = sweep_file(tmp_path, name, design, base=base or None)
    spec = parse_sweep(read_sweep_file(str(path), []), [])
    create_or_resume(spec, [], storage, tracking_uri)
    return path


def logs(tmp_path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(tmp_path.glob("*.log")))


def test_three_workers_on_postgres_run_every_arm_and_seed_once(workspace, tmp_path, postgres, shared_mlflow):
    storage = postgres.url(postgres.create("optuna"))
    uri = shared_mlflow.url
    three = {"kind": "arms", "arms": SIX_ARMS["arms"][1:4]}  # 6 trials for 3 workers; both attention kinds
    slots = sorted((a["name"], seed) for a in three["arms"] for seed in (0, 1))
    path = sweep_file(tmp_path, "pg3", three)
    # the head: creates the sweep, runs one worker, closes the sweep when every trial is done
    head = mta("sweep", str(path), "--workers", "1", "--storage", storage, "--tracking-uri", uri,
               log=tmp_path / "head.log")  # fmt: skip
    deadline = time.time() + 90
    while "pg3" not in optuna.get_all_study_names(storage):  # other hosts join once the sweep exists
        assert time.time() < deadline and head.poll() is None, logs(tmp_path)
        time.sleep(0.5)
    others = [worker("pg3", storage, f"w{i}", tmp_path / f"w{i}.log") for i in (1, 2)]
    connections, deadline = 0, time.time() + 240
    while head.poll() is None and time.time() < deadline:
        connections = max(connections, postgres.connections(storage.rsplit("/", 1)[1]))
        time.sleep(1)
    assert wait_all([head, *others], 180) == [0, 0, 0], logs(tmp_path)

    done = trials("pg3", storage)
    assert complete_slots("pg3", storage) == slots, logs(tmp_path)  # exactly 6, no duplicate (arm, seed)
    assert all(t.state == TrialState.COMPLETE for t in done)
    by_worker = {t.user_attrs["worker"] for t in done}
    assert len(by_worker) >= 2, f"one worker ran everything: {by_worker}"
    first = min(t.datetime_start for t in done)
    print(f"workers: {sorted(by_worker)}; peak PostgreSQL connections to the Optuna database: {connections}")
    for t in sorted(done, key=lambda t: t.datetime_start):
        print(
            f"  {t.user_attrs['worker']:>6} {t.user_attrs['arm']:>16} seed {t.user_attrs['seed']}: "
            f"start +{(t.datetime_start - first).total_seconds():5.1f}s, "
            f"{(t.datetime_complete - t.datetime_start).total_seconds():4.1f}s, overhead {t.user_attrs['overhead_s']}s"
        )

    parents, kids = runs("pg3", uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(kids) == 6 and finished_slots(kids) == slots
    assert {r.data.tags["mlflow.parentRunId"] for r in kids} == {parents[0].info.run_id}
    assert {t.user_attrs["mlflow_run_id"] for t in done} == {r.info.run_id for r in kids}
    assert all("toy/error" in r.data.metrics for r in kids)
    # artifacts went through the server's proxy into its artifact folder
    client = MlflowClient(uri)
    assert "config.yaml" in {a.path for a in client.list_artifacts(kids[0].info.run_id)}
    assert any(p.name == "config.yaml" for p in shared_mlflow.artifacts.rglob("*"))


def test_a_sweep_still_being_created_is_not_ready_for_workers(postgres):
    """Between creating the study and queueing its trials, a joining worker must wait, not see an empty queue."""
    storage = postgres.url(postgres.create("optuna"))
    optuna.create_study(study_name="early", storage=storage)
    with pytest.raises(SweepNotReady, match="still being created"):
        load("early", storage)


def test_the_compose_allowed_hosts_let_compose_names_in_and_keep_others_out(shared_mlflow):
    """MLflow's host-header check with the compose file's --allowed-hosts (the servers here all run with it)."""

    def status(host: str) -> int:
        request = urllib.request.Request(f"{shared_mlflow.url}/api/2.0/mlflow/experiments/search?max_results=1")
        request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status("mlflow:5000") == 200
    assert status(f"localhost:{compose.read_env()['MLFLOW_PORT']}") == 200
    assert status("attacker.example:5000") in (400, 403)


def test_a_killed_worker_trial_goes_stale_and_another_worker_reruns_it(workspace, tmp_path, postgres, shared_mlflow):
    storage = postgres.url(postgres.create("optuna"))
    two_arms = {"kind": "arms", "arms": [SIX_ARMS["arms"][0], SIX_ARMS["arms"][2]]}  # 4 trials for 3 workers
    slots = sorted((a["name"], seed) for a in two_arms["arms"] for seed in (0, 1))
    steps = {"train.max_steps": 20, "train.val_every": 5}
    create_sweep(tmp_path, "pgkill", storage, shared_mlflow.url, design=two_arms, **steps)
    procs = {f"w{i}": worker("pgkill", storage, f"w{i}", tmp_path / f"w{i}.log") for i in range(3)}
    victim = None
    deadline = time.time() + 120
    while victim is None:  # a trial that has reported a validation step: its worker is mid-trial
        assert time.time() < deadline, logs(tmp_path)
        time.sleep(0.2)
        running = [t for t in trials("pgkill", storage) if t.state == TrialState.RUNNING and t.intermediate_values]
        if running:
            victim = running[0]
    os.killpg(procs[victim.user_attrs["worker"]].pid, signal.SIGKILL)
    procs[victim.user_attrs["worker"]].wait()
    survivors = [p for w, p in procs.items() if w != victim.user_attrs["worker"]]
    assert wait_all(survivors, 180) == [0, 0], logs(tmp_path)

    assert complete_slots("pgkill", storage) == slots, logs(tmp_path)
    after = {t.number: t for t in trials("pgkill", storage)}
    assert after[victim.number].state == TrialState.FAIL  # the heartbeat stopped: failed as stale
    slot = (victim.user_attrs["arm"], victim.user_attrs["seed"])
    (rerun,) = [
        t
        for t in after.values()
        if t.state == TrialState.COMPLETE and (t.user_attrs["arm"], t.user_attrs["seed"]) == slot
    ]
    assert rerun.number > victim.number and rerun.user_attrs["worker"] != victim.user_attrs["worker"]
    _, kids = runs("pgkill", shared_mlflow.url)
    assert finished_slots(kids) == slots
    assert all(r.info.status in ("FINISHED", "FAILED") for r in kids), "the dead worker's run was left RUNNING"


@pytest.mark.slow  # the suite's longest test (about a minute): with the short-outage test below, in `make test-all`
def test_mlflow_outage_fails_trials_clearly_keeps_what_was_logged_and_the_sweep_completes_after(
    workspace, tmp_path, postgres, mlflow_server, monkeypatch
):
    # workers give up on the server after ~2 s instead of MLflow's default ~4 min of retries with back-off
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    storage = postgres.url(postgres.create("optuna"))
    uri = mlflow_server.url
    two_arms = {"kind": "arms", "arms": SIX_ARMS["arms"][::2][:2]}  # 4 trials: this test is about the outage
    slots = sorted((a["name"], seed) for a in two_arms["arms"] for seed in (0, 1))
    path = create_sweep(tmp_path, "pgdown", storage, uri, design=two_arms)
    procs = [worker("pgdown", storage, f"w{i}", tmp_path / f"w{i}.log") for i in range(2)]
    deadline = time.time() + 120
    while len(complete_slots("pgdown", storage)) < 2:
        assert time.time() < deadline and any(p.poll() is None for p in procs), logs(tmp_path)
        time.sleep(0.3)
    mlflow_server.stop()
    before_slots = complete_slots("pgdown", storage)
    codes = wait_all(procs, 120)  # the workers drain the queue and exit, 1 when a trial of theirs failed
    assert set(codes) <= {0, 1} and 1 in codes, logs(tmp_path)

    failed = [t for t in trials("pgdown", storage) if t.state == TrialState.FAIL]
    assert failed, "no trial failed while the MLflow server was down"
    for t in failed:
        assert t.user_attrs["mta.failure_kind"] == "error"
        assert f"127.0.0.1:{mlflow_server.port}" in t.user_attrs["failure"], t.user_attrs["failure"]
    assert len(complete_slots("pgdown", storage)) < len(slots)

    mlflow_server.start()  # same database, same port
    _, kids = runs("pgdown", uri)
    kept = {(r.data.tags["mta.arm"], int(r.data.tags["mta.seed"])): r for r in kids if r.info.status == "FINISHED"}
    assert set(before_slots) <= set(kept), "a run finished before the outage is gone"
    metrics_before = {slot: kept[slot].data.metrics for slot in before_slots}

    # the same sweep command resumes it; trials that raised are queued again with --retry-failed
    result = cli("sweep", path, "--workers", "2", "--storage", storage, "--tracking-uri", uri, "--retry-failed")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert complete_slots("pgdown", storage) == slots
    parents, kids = runs("pgdown", uri)
    assert parents[0].info.status == "FINISHED" and finished_slots(kids) == slots
    assert all(r.info.status in ("FINISHED", "FAILED") for r in kids), "a run of the outage was left RUNNING"
    after = {(r.data.tags["mta.arm"], int(r.data.tags["mta.seed"])): r for r in kids if r.info.status == "FINISHED"}
    for slot, metrics in metrics_before.items():  # nothing logged before the outage was lost or rerun
        assert after[slot].info.run_id == kept[slot].info.run_id and after[slot].data.metrics == metrics


@pytest.mark.slow
def test_a_short_mlflow_outage_is_ridden_out_by_the_client_back_off(workspace, tmp_path, postgres, mlflow_server):
    """With MLflow's default retries (7, exponential back-off, ~4 min in all) a restart of the server mid-sweep
    costs the workers a pause, not a failed trial."""
    storage = postgres.url(postgres.create("optuna"))
    create_sweep(tmp_path, "pgblip", storage, mlflow_server.url)
    procs = [worker("pgblip", storage, f"w{i}", tmp_path / f"w{i}.log") for i in range(2)]
    deadline = time.time() + 120
    while len(complete_slots("pgblip", storage)) < 2:
        assert time.time() < deadline, logs(tmp_path)
        time.sleep(0.3)
    mlflow_server.stop()
    time.sleep(5)
    mlflow_server.start()
    assert wait_all(procs, 300) == [0, 0], logs(tmp_path)
    assert complete_slots("pgblip", storage) == SLOTS
    assert not [t for t in trials("pgblip", storage) if t.state == TrialState.FAIL]


def test_adaptive_seeds_on_postgres_survive_a_kill_and_run_each_slot_once(workspace, tmp_path, postgres, shared_mlflow):
    """Seeds until decided with three workers on PostgreSQL, one killed with SIGKILL mid-trial: the survivors finish,
    every (arm, seed) completes exactly once, and each arm's seeds are 0..n-1 with n in [initial, max]."""
    storage = postgres.url(postgres.create("optuna"))
    design = {"kind": "arms", "arms": [SIX_ARMS["arms"][0], SIX_ARMS["arms"][2]]}  # baseline and k3
    path = sweep_file(
        tmp_path, "pgadapt", design, base={"train.max_steps": 20, "train.val_every": 5}, seeds={"initial": 2, "max": 3}
    )
    path.write_text(path.read_text().replace("metric: toy/error", "metric: final/loss"))
    spec = parse_sweep(read_sweep_file(str(path), []), [])
    create_or_resume(spec, [], storage, shared_mlflow.url)
    procs = {f"w{i}": worker("pgadapt", storage, f"w{i}", tmp_path / f"w{i}.log") for i in range(3)}
    victim, deadline = None, time.time() + 120
    while victim is None:
        assert time.time() < deadline, logs(tmp_path)
        time.sleep(0.2)
        running = [t for t in trials("pgadapt", storage) if t.state == TrialState.RUNNING and t.intermediate_values]
        victim = running[0] if running else None
    os.killpg(procs[victim.user_attrs["worker"]].pid, signal.SIGKILL)
    procs[victim.user_attrs["worker"]].wait()
    survivors = [p for w, p in procs.items() if w != victim.user_attrs["worker"]]
    assert wait_all(survivors, 240) == [0, 0], logs(tmp_path)
    done = complete_slots("pgadapt", storage)
    assert len(done) == len(set(done)), done
    arms = [a["name"] for a in design["arms"]]
    per_arm = {arm: sorted(s for a, s in done if a == arm) for arm in arms}
    assert all(seeds == list(range(len(seeds))) and 2 <= len(seeds) <= 3 for seeds in per_arm.values()), per_arm
    _, kids = runs("pgadapt", shared_mlflow.url)
    assert finished_slots(kids) == sorted(done)
