"""Sweep files: design expansion, arm names, and one clear error for every malformed file."""

from pathlib import Path

import optuna
import pytest

from mta_ablate.config import ConfigError
from mta_ablate.sweep.design import expand, sample_overrides, search_space
from mta_ablate.sweep.parse import parse_sweep, read_sweep_file
from mta_ablate.sweep.spec import to_override
from tests.cli import cli

BASE = {
    "name": "t",
    "defaults": [{"model": "toy"}, {"task": "find_block"}, {"train": "cpu_quick"}],
    "seeds": [0, 1],
    "objective": {"metric": "toy/error", "direction": "minimize"},
}


def test_ablation_changes_one_factor_at_a_time_and_runs_the_reference_once():
    arms = expand(
        {
            "kind": "ablation",
            "reference": {"attention": "mta_toy", "attention.qk_pre": [2, 7]},
            "factors": {"attention.qk_pre": [[2, 7], [2, 3], [1, 7]], "train.lr": [0.001, 0.003]},
        }
    )
    assert [a.name for a in arms] == ["reference", "qk_pre=2x3", "qk_pre=1x7", "lr=0.001", "lr=0.003"]
    assert arms[1].overrides == {"attention": "mta_toy", "attention.qk_pre": [2, 3]}
    assert (arms[1].factor, arms[1].level) == ("attention.qk_pre", "2x3")
    assert arms[3].overrides == {"attention": "mta_toy", "attention.qk_pre": [2, 7], "train.lr": 0.001}
    assert (arms[0].factor, arms[0].level) == ("reference", "reference")


def test_ablation_levels_can_change_several_keys_under_one_label():
    arms = expand(
        {
            "kind": "ablation",
            "reference": {"attention": "mta_paper"},
            "factors": {"post": {"no_post": {"attention.qk_post": None, "attention.head_mix_post": None}}},
        }
    )
    assert arms[1].name == "post=no_post"
    assert arms[1].overrides == {"attention": "mta_paper", "attention.qk_post": None, "attention.head_mix_post": None}


def test_grid_is_the_cartesian_product():
    arms = expand({"kind": "grid", "factors": {"attention.qk_pre": [[1, 3], [2, 3]], "seedless.x": [1, 2, 3]}})
    assert len(arms) == 6 and arms[0].name == "qk_pre=1x3,x=1" and arms[-1].name == "qk_pre=2x3,x=3"


def test_explicit_arms_and_names_derived_from_overrides():
    arms = expand(
        {"kind": "arms", "arms": [{"name": "base", "overrides": {}}, {"overrides": {"attention.qk_pre": [4, 9]}}]}
    )
    assert [a.name for a in arms] == ["base", "qk_pre=4x9"]


def test_search_space_with_a_conditional_parameter():
    space = search_space(
        {
            "kind": "search",
            "params": {
                "attention.qk_pre": {"type": "categorical", "choices": [None, [2, 7]]},
                "attention.layers": {
                    "type": "categorical",
                    "choices": ["all", "every:2"],
                    "when": {"attention.qk_pre": [2, 7]},
                },
                "train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            },
        }
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = [sample_overrides(space, study.ask()) for _ in range(30)]
    for s in seen:
        assert 1e-4 <= s["train.lr"] <= 1e-2
        assert ("attention.layers" in s) == (s["attention.qk_pre"] == [2, 7])
    assert any(s["attention.qk_pre"] is None for s in seen) and any(s["attention.qk_pre"] == [2, 7] for s in seen)


def test_override_strings_parse_back():
    assert to_override("attention.qk_pre", [2, 7]) == "attention.qk_pre=[2,7]"
    assert to_override("attention.qk_post", None) == "attention.qk_post=null"
    assert to_override("tracking.run_name", "qk_pre=2x3-seed0") == "tracking.run_name='qk_pre=2x3-seed0'"


@pytest.mark.parametrize(
    "design, words",
    [
        (
            {"kind": "ablation", "reference": {}, "factors": {"attention.qk_prex": [[2, 3]]}},
            ["arm 'qk_prex=2x3'", "attention.qk_prex", "unknown key", "allowed: qk_pre"],
        ),
        ({"kind": "ablation", "reference": {}, "factors": {"attention.qk_pre": [[2, 4]]}}, ["arm 'qk_pre=2x4'", "odd"]),
        ({"kind": "grid", "factors": {}}, ["at least one factor"]),
        ({"kind": "arms", "arms": []}, ["non-empty list"]),
        ({"kind": "mixed"}, ["design.kind='mixed'", "ablation"]),
        ({"kind": "grid", "factors": {"train.lr": []}}, ["train.lr", "non-empty list"]),
        ({"kind": "search", "params": {"train.lr": {"type": "float", "low": 1, "high": 0}}}, ["low < high"]),
    ],
)
def test_malformed_designs_fail_with_one_clear_message(design, words):
    with pytest.raises(ConfigError) as err:
        parse_sweep({**BASE, "design": design})
    for word in words:
        assert word in str(err.value)


def test_bad_top_level_values():
    for data, word in [
        ({**BASE, "seeds": []}, "sweep.seeds"),
        ({**BASE, "objective": {"metric": "loss"}}, "metric"),
        ({**BASE, "colour": 1}, "sweep.colour"),
        ({**BASE, "pruner": {"kind": "magic"}}, "pruner"),
    ]:
        with pytest.raises(ConfigError, match=word):
            parse_sweep({**data, "design": {"kind": "arms", "arms": [{"name": "a", "overrides": {}}]}})


def test_shipped_sweep_files_validate_and_expand(tmp_path):
    import glob

    files = sorted(glob.glob("sweeps/*.yaml"))
    assert files
    for path in files:
        data = read_sweep_file(path)
        spec = parse_sweep(data, ["train.max_steps=2"])
        assert spec.kind == "search" or len(spec.slots()) == len(spec.arms) * len(spec.seeds) > 0, path


def test_cli_rejects_a_bad_sweep_before_any_trial(workspace, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nobjective: {metric: toy/error}\ndesign: {kind: ablation, reference: {},"
        " factors: {attention.qk_pre: [[2, 4]]}}\n"
    )
    result = cli("sweep", bad)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "qk_pre=2x4" in result.stderr
    assert not (workspace / "optuna.db").exists() and not (workspace / "mlflow.db").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this host has CUDA")
def test_a_gpu_sweep_on_a_host_without_cuda_is_one_line_and_exit_2(workspace):
    result = cli("sweep", "sweeps/paper_ablation_gpu.yaml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "train.accelerator=cuda: no CUDA device" in result.stderr and "allowed here: auto, cpu" in result.stderr
    assert not (workspace / "optuna.db").exists() and not (workspace / "mlflow.db").exists()
    train = cli("train", "train=gpu")
    assert train.returncode == 2 and "train.accelerator=cuda: no CUDA device" in train.stderr


TINY_RUN = [
    "train.max_steps=2",
    "train.val_every=1",
    "train.batch_size=2",
    "train.val_batches=1",
    "train.eval_batches=1",
    "train.val_samples=2",
    "train.eval_samples=2",
    "train.warmup_steps=0",
    "train.threads=1",
]


GPU_ON_CPU = ["model=tiny", "train.accelerator=cpu", "train.precision=32-true", "train.micro_batch=1"]
"""What shrinks a `*_gpu.yaml` sweep (a paper-scale model on CUDA) to one that 2 CPU steps can run, with the
shorter context of its task below."""
SHORT_CONTEXT = {
    "lm": ["task.seq_len=64"],
    "needle": ["task.context_len=256"],
    "babilong": ["task.context_len=256", "task.n_facts=4"],
}


def shrink_for_cpu(path: str) -> list[str]:
    if not path.endswith("_gpu.yaml"):
        return TINY_RUN
    defaults = __import__("yaml").safe_load(Path(path).read_text())["defaults"]
    (task,) = [d["task"] for d in defaults if isinstance(d, dict) and "task" in d]
    return TINY_RUN + GPU_ON_CPU + SHORT_CONTEXT[task]


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("sweeps/*.yaml")))
def test_every_shipped_sweep_runs_one_tiny_trial(tracked_workspace, path):
    """A broken sweep file cannot land: the last arm (or one sampled point of a search) trains for 2 steps."""
    from mta_ablate.config.compose import load_experiment
    from mta_ablate.sweep.design import sample_overrides
    from mta_ablate.trial import run_trial

    tiny = shrink_for_cpu(path)
    spec = parse_sweep(read_sweep_file(path, tiny), tiny, validate=False)
    if spec.kind == "search":
        overrides = sample_overrides(list(spec.space), optuna.create_study().ask())
    else:
        overrides = spec.arms[-1].overrides  # the last arm: usually the one furthest from the base experiment
    result = run_trial(load_experiment(spec.experiment_overrides(overrides, spec.seeds[0])))
    assert result.steps == 2 and spec.metric in result.metrics, sorted(result.metrics)


def test_overrides_may_follow_options(workspace):
    cmd = ["sweep", "sweeps/quickstart.yaml", "--dry-run", "train.max_steps=7"]
    result = cli(*cmd)
    assert result.returncode == 0, result.stderr
    assert "train.max_steps=7" in result.stdout.replace("\n", "")
    bad = cli(*cmd, "--no-such-flag")
    assert bad.returncode == 2 and "--no-such-flag" in bad.stderr


def test_a_misspelt_key_of_a_search_parameter_is_refused():
    with pytest.raises(ConfigError, match=r"design.params.train.lr.lgo: unknown key; allowed: type, low, high, log"):
        search_space({"kind": "search", "params": {"train.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "lgo": 1}}})
    with pytest.raises(ConfigError, match=r"design.params.seed.low: unknown key; allowed: type, choices, when"):
        search_space({"kind": "search", "params": {"seed": {"type": "categorical", "choices": [0, 1], "low": 0}}})
