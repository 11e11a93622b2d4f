"""Each trial is resolved once: sweep creation composes each arm exactly once, workers and `status` rebuild the stored
configs without Hydra, and the pruner is sized by each trial's own max_steps."""

import pytest

from mta_ablate.cli import main
from mta_ablate.config import compose
from mta_ablate.sweep import study as sweep_study
from mta_ablate.sweep.parse import parse_sweep, read_sweep_file
from mta_ablate.sweep.worker import run_worker
from tests.sweep.test_runner import TINY, sweep_file

ARMS = {
    "kind": "arms",
    "arms": [
        {"name": "short", "overrides": {"attention": "baseline"}},
        {"name": "long", "overrides": {"attention": "mta_toy", "attention.qk_pre": [2, 3], "train.max_steps": 16}},
        {"name": "k1", "overrides": {"attention": "mta_toy", "attention.qk_pre": [1, 1]}},
    ],
}


@pytest.mark.usefixtures("tracked_workspace")
def test_creation_composes_each_arm_once_and_workers_and_status_never(workspace, tmp_path, monkeypatch):
    calls = []
    real = compose.compose_dict

    def counting(overrides=None, config_name="config"):
        calls.append(list(overrides or []))
        return real(overrides, config_name)

    monkeypatch.setattr(compose, "compose_dict", counting)
    path = sweep_file(tmp_path, "once", ARMS, pruner={"kind": "asha"})
    spec = parse_sweep(read_sweep_file(str(path), []), [])
    url = sweep_study.storage_url()
    sweep_study.create_or_resume(spec, [], url, None)
    assert len(calls) == len(ARMS["arms"])

    def no_hydra(*args, **kwargs):
        raise AssertionError("a worker or status composed a config with Hydra")

    monkeypatch.setattr(compose, "compose_dict", no_hydra)
    sized = []
    real_pruner = sweep_study.pruner_for

    def recording(spec, max_steps):
        sized.append(max_steps)
        return real_pruner(spec, max_steps)

    monkeypatch.setattr(sweep_study, "pruner_for", recording)
    assert run_worker("once", url, threads=1) == 0
    assert main(["status", "once"]) == 0
    # the pruner of the study as loaded, then one per trial, each sized by its own arm's steps
    steps = {"short": TINY["train.max_steps"], "long": 16, "k1": TINY["train.max_steps"]}
    assert sorted(sized[1:7]) == sorted(steps[a] for a in steps for _ in (0, 1))
    finished = [t for t in sweep_study.load("once", url)[0].get_trials() if "steps" in t.user_attrs]
    assert {(t.user_attrs["arm"], t.user_attrs["steps"]) for t in finished} == set(steps.items())


@pytest.mark.parametrize("kind", ["asha", "hyperband"])
def test_the_pruner_is_sized_by_the_steps_it_is_given(kind):
    spec = parse_sweep(
        {
            "name": "p",
            "objective": {"metric": "toy/error"},
            "design": {"kind": "arms", "arms": [{"name": "a", "overrides": {}}]},
            "pruner": {"kind": kind},
        },
        validate=False,
    )
    short, long = sweep_study.pruner_for(spec, 80), sweep_study.pruner_for(spec, 800)
    if kind == "asha":
        assert (short._min_resource, long._min_resource) == (10, 100)
    else:
        assert (short._max_resource, long._max_resource) == (80, 800)
