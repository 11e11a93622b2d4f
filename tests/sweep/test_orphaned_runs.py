"""A trial rerun for its (arm, seed) closes the MLflow runs no recorded trial owns, in a real (SQLite) MLflow store:
a RUNNING one (its worker died) and a FINISHED one whose worker died after MLflow closed the run and before Optuna
recorded the trial (a kill in that window left two finished runs for one slot)."""

from mta_ablate.sweep.objective import close_orphaned_runs
from mta_ablate.tracking import mlflow_store as store


def _run(client, experiment, arm, seed, status):
    tags = {store.TAG_ARM: arm, store.TAG_SEED: str(seed), store.TAG_KIND: store.KIND_TRIAL}
    run = client.create_run(experiment, tags=tags)
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_a_rerun_closes_running_and_unrecorded_finished_runs_of_its_slot_only(workspace):
    client = store.client()
    experiment = client.create_experiment("orphans")
    recorded = _run(client, experiment, "k3", 0, "FINISHED")  # a run a recorded (complete or pruned) trial owns
    unrecorded = _run(client, experiment, "k3", 0, "FINISHED")  # killed before Optuna recorded it
    running = _run(client, experiment, "k3", 0, "RUNNING")  # killed mid-trial
    failed = _run(client, experiment, "k3", 0, "FAILED")
    other_slot = _run(client, experiment, "k3", 1, "FINISHED")
    keep = _run(client, experiment, "k3", 0, "RUNNING")  # the rerun itself
    close_orphaned_runs(None, "orphans", "k3", 0, keep=keep, recorded=frozenset({recorded}))
    status = {r: client.get_run(r).info.status for r in (recorded, unrecorded, running, failed, other_slot, keep)}
    assert status == {
        recorded: "FINISHED",
        unrecorded: "FAILED",
        running: "FAILED",
        failed: "FAILED",
        other_slot: "FINISHED",
        keep: "RUNNING",
    }
    reason = client.get_run(unrecorded).data.tags[store.TAG_FAILURE]
    assert "before its trial was recorded" in reason and keep in reason
