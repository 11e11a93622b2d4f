"""Seeds until decided inside a sweep: which seeds get queued, atomically, and each (arm, seed) run exactly once."""

import multiprocessing
import shutil
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from mta_ablate.errors import ConfigError
from mta_ablate.sweep import adaptive
from mta_ablate.sweep.parse import parse_sweep
from mta_ablate.sweep.slots import SKIPPED, queue_missing_slots
from mta_ablate.sweep.study import open_storage, storage_url
from tests.cli import cli
from tests.sweep.test_runner import THREE_ARMS, run_sweep, sweep_file, trials

ADAPTIVE = {"initial": 2, "max": 4}


def spec_of(design=THREE_ARMS, seeds=None):
    data = {
        "name": "s",
        "defaults": [{"model": "toy"}, {"task": "find_block"}, {"train": "cpu_quick"}],
        "seeds": seeds or ADAPTIVE,
        "objective": {"metric": "final/loss", "direction": "minimize"},
        "design": design,
    }
    return parse_sweep(data, validate=False)


def done(value):
    return ("done", value)


def test_the_next_seed_is_queued_only_when_both_sides_are_finished_and_the_comparison_is_open():
    spec = spec_of()
    slots = {(a, s): done(1.0 + 0.1 * s + (0.05 if a == "k3" else 0)) for a in ("baseline", "k3") for s in (0, 1)}
    slots |= {("k7", 0): done(0.5), ("k7", 1): ("running", None)}
    decisions, wanted = adaptive.plan(spec, slots)
    assert decisions["k3"].open and decisions["k3"].n == 2
    assert wanted == [("k3", 2), ("baseline", 2)]  # k7's seed 1 is still running: no look yet
    slots |= {("k3", 2): ("waiting", None), ("baseline", 2): ("waiting", None), ("k7", 1): done(0.4)}
    _, wanted = adaptive.plan(spec, slots)
    assert wanted == [("k7", 2)]  # the reference's seed 2 is already queued for k3


def test_a_decided_or_maxed_comparison_gets_no_more_seeds():
    spec = spec_of(seeds={"initial": 2, "max": 2})
    slots = {(a, s): done(float(s) + (a == "k3")) for a in ("baseline", "k3", "k7") for s in (0, 1)}
    decisions, wanted = adaptive.plan(spec, slots)
    assert wanted == [] and not decisions["k3"].open


@pytest.mark.parametrize(
    ("seeds", "design", "message"),
    [
        ({"initial": 1, "max": 4}, THREE_ARMS, "2 <= initial <= max"),
        ({"initial": 3, "max": 5, "alpha": 0.7}, THREE_ARMS, "sweep.seeds.alpha"),
        ({"initial": 3, "max": 5, "reference": "nope"}, THREE_ARMS, "not an arm"),
        ({"initial": 3, "max": 5, "begin": 1}, THREE_ARMS, "unknown key"),
        (
            {"initial": 3, "max": 5},
            {"kind": "arms", "arms": [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {}}]},
            "name it",
        ),
    ],
)
def test_bad_seed_policies_are_one_line_errors(seeds, design, message):
    with pytest.raises(ConfigError, match=message):
        spec_of(design, seeds)


def test_a_grid_compares_each_arm_within_its_other_levels():
    grid = {"kind": "grid", "factors": {"attention": ["baseline", "mta_toy"], "train.lr": [0.001, 0.003]}}
    spec = spec_of(grid, {"initial": 2, "max": 3, "reference": {"attention": "baseline"}})
    assert spec.reference_of["attention=mta_toy,lr=0.003"] == "attention=baseline,lr=0.003"
    assert spec.reference_of["attention=baseline,lr=0.001"] == "attention=baseline,lr=0.001"


def _extend_in_process(url, barrier):
    study = optuna.load_study(study_name="race", storage=open_storage(url))
    spec = spec_of()
    barrier.wait()
    adaptive.extend(study, spec)


def test_two_workers_finishing_at_once_add_each_seed_once(workspace):
    url = storage_url()
    study = optuna.create_study(study_name="race", storage=open_storage(url))
    spec = spec_of()
    queue_missing_slots(study, spec)
    for t in study.get_trials():  # finish the first seeds by hand with values that leave every comparison open
        trial = study.ask()
        trial.set_user_attr("arm", t.user_attrs["arm"])
        trial.set_user_attr("seed", t.user_attrs["seed"])
        study.tell(trial, 1.0 + 0.1 * t.user_attrs["seed"] + 0.01 * len(t.user_attrs["arm"]))
    for t in study.get_trials(states=(TrialState.WAITING,)):
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study._storage.set_trial_user_attr(t._trial_id, SKIPPED, "replaced by a hand-finished trial")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_extend_in_process, args=(url, barrier)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    waiting = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in study.get_trials(states=(TrialState.WAITING,))]
    assert sorted(waiting) == [("baseline", 2), ("k3", 2), ("k7", 2)]


@pytest.mark.usefixtures("tracked_workspace")
def test_an_adaptive_sweep_with_two_workers_runs_each_arm_and_seed_once(workspace, tmp_path):
    path = sweep_file(tmp_path, "adapt", THREE_ARMS, seeds=ADAPTIVE)
    text = path.read_text().replace("metric: toy/error", "metric: final/loss")
    path.write_text(text)
    result = run_sweep(path, "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    ran = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in trials("adapt") if t.state == TrialState.COMPLETE]
    assert len(ran) == len(set(ran))  # exactly once
    seeds = {arm: sorted(s for a, s in ran if a == arm) for arm in ("baseline", "k3", "k7")}
    for arm, got in seeds.items():
        assert got == list(range(len(got))) and 2 <= len(got) <= 4, (arm, got)
    study = optuna.load_study(study_name="adapt", storage=storage_url())
    spec = parse_sweep(__import__("yaml").safe_load(text), validate=False)
    decisions = adaptive.decisions(study, spec)
    for arm in ("k3", "k7"):  # every comparison ended decided, or at its maximum
        assert not decisions[arm].open and decisions[arm].n == len(seeds[arm])
    assert len(seeds["baseline"]) == max(len(seeds["k3"]), len(seeds["k7"]))
    status = cli("status", "adapt")
    assert "seeds until decided" in status.stdout and "decided at n" in status.stdout
    # every run logged its initial weights' digests: shared parameters are bit-identical across arms of one seed
    import json

    from mlflow.tracking import MlflowClient

    from mta_ablate.tracking.mlflow_store import tracking_uri

    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("adapt")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens training runs
    assert "mlflow.sharedViewState.mta-sweep" in experiment.tags  # the saved view `mta-ablate ui` links to
    exp = experiment.experiment_id
    kids = [r for r in client.search_runs([exp]) if r.data.tags.get("mta.kind") == "trial"]
    digests = {}
    for run in kids:
        path = client.download_artifacts(run.info.run_id, "init_digest.json", str(workspace))
        digests[(run.data.tags["mta.arm"], int(run.data.tags["mta.seed"]))] = json.loads(Path(path).read_text())
    base0, k7_0, base1 = digests[("baseline", 0)], digests[("k7", 0)], digests[("baseline", 1)]
    assert all(k7_0[name] == value for name, value in base0.items())
    assert any(base1[name] != value for name, value in base0.items())


def test_the_same_trial_is_bitwise_identical_on_cpu_with_one_or_two_workers(
    workspace, tmp_path, monkeypatch, mlflow_template
):
    """A CPU trial's thread count comes from its config (train.threads=1 in the CPU recipes), not from how many
    workers share the host: the same (arm, seed) gives the same numbers to the last bit either way."""
    values = {}
    for workers in ("1", "2"):
        home = tmp_path / f"home{workers}"
        home.mkdir()
        shutil.copy(mlflow_template, home / "mlflow.db")  # an empty store (see tests/conftest.py)
        monkeypatch.setenv("MTA_HOME", str(home))
        design = {"kind": "arms", "arms": [{"name": "k7", "overrides": {"attention": "mta_toy"}}]}
        path = sweep_file(tmp_path, f"threads{workers}", design, seeds=[0])
        result = run_sweep(path, "--workers", workers)
        assert result.returncode == 0, result.stderr[-2000:]
        values[workers] = sorted((t.user_attrs["seed"], t.value) for t in trials(f"threads{workers}"))
    assert values["1"] == values["2"] and len(values["1"]) == 1


def test_sweeps_lists_delete_removes_and_dry_run_says_what_exists(workspace, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from mta_ablate.cli import main
    from mta_ablate.sweep.parse import read_sweep_file
    from mta_ablate.sweep.study import create_or_resume
    from mta_ablate.tracking.mlflow_store import tracking_uri

    path = sweep_file(tmp_path, "gone", THREE_ARMS)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "creates sweep gone there" in " ".join(capsys.readouterr().out.split())  # no store yet, none created
    assert not workspace.exists()
    create_or_resume(parse_sweep(read_sweep_file(str(path), []), []), [], storage_url(), None)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "sweep gone exists (queued): 0 complete, 6 left" in " ".join(capsys.readouterr().out.split())
    assert main(["report", "gone", "--out", str(tmp_path / "rep")]) == 2  # nothing finished: nothing to report
    assert "no complete trial yet" in capsys.readouterr().err and not (tmp_path / "rep").exists()
    assert main(["sweeps", "--json"]) == 0
    (row,) = __import__("json").loads(capsys.readouterr().out)
    assert (row["sweep"], row["state"], row["waiting"], row["design"]) == ("gone", "queued", 6, "arms")
    assert main(["delete", "gone", "--yes"]) == 0
    assert main(["sweeps", "--json"]) == 0
    assert __import__("json").loads(capsys.readouterr().out.split("deleted sweep gone")[-1]) == []
    assert MlflowClient(tracking_uri()).get_experiment_by_name("gone").lifecycle_stage == "deleted"
    assert main(["delete", "gone", "--yes"]) == 2  # no such sweep any more: one line, exit 2


def test_version():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mta_ablate", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mta-ablate 0.")
