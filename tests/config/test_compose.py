"""Composition of the packaged Hydra groups and validation of every mistake before any work starts."""

import subprocess
import sys

import pytest

from mta_ablate.attention import PRESETS, AttentionSpec
from mta_ablate.config import ConfigError
from mta_ablate.config.compose import group_options, load_experiment
from tests.cli import cli


def test_default_experiment_composes_with_vocab_from_the_task():
    config = load_experiment([])
    assert config.arm == "baseline" and config.task.name == "find_block"
    assert config.model.vocab_size == 26 + 4  # letters + ". # <bos> <eos>", from the task, not a constant


def test_overrides_reach_the_typed_config_and_name_the_arm():
    config = load_experiment(
        [
            "model=tiny",
            "attention=mta_toy",
            "attention.qk_pre=[2,7]",
            "train.max_steps=5",
            "seed=3",
            "model.rope_theta=100000.0",
        ]
    )
    assert config.attention.qk_pre == (2, 7) and config.train.max_steps == 5 and config.seed == 3
    assert config.model.dim == 128 and config.model.rope_theta == 100000.0
    assert config.arm == "mta_toy,qk_pre=[2,7]" and config.run_name == "mta_toy,qk_pre=[2,7]-seed3"


@pytest.mark.parametrize("name", group_options("attention"))
def test_attention_yaml_matches_the_python_preset(name):
    config = load_experiment([f"attention={name}", "model=tiny"])
    assert config.attention == PRESETS[name]


@pytest.mark.parametrize("group", ["model", "task", "train"])
def test_every_group_option_composes_into_what_its_yaml_says(group):
    """Every packaged option composes (text tasks included: a config reads no corpus) and what it sets is what the
    experiment holds."""
    from importlib import resources

    import yaml

    for option in group_options(group):
        config = load_experiment(
            [f"{group}={option}", "model.max_seq_len=4096"] if group == "task" else [f"{group}={option}"]
        )
        values = yaml.safe_load((resources.files("mta_ablate.conf") / group / f"{option}.yaml").read_text()) or {}
        section = {"model": config.model, "task": config.task, "train": config.train}[group]
        for key, value in values.items():
            if key in ("name", "defaults") or key.startswith("_"):
                continue
            held = getattr(section, key)
            assert held == (tuple(value) if isinstance(value, list) else value), (group, option, key)
        if group == "task":
            assert config.task.name == values.get("name", option)
            assert config.model.vocab_size == config.task.vocab_size and config.task.seq_len >= 1


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model=huge"], ["model=huge", "unknown option", "tiny"]),
        (["train.max_step=3"], ["train.max_step", "unknown key", "max_steps"]),
        (["train.lr=abc"], ["train.lr='abc'", "expected a number"]),
        (["train.schedule=wavy"], ["train.schedule='wavy'", "'cosine'"]),
        (["train.batch_size=0"], ["train.batch_size=0", ">= 1"]),
        (["attention.qk_pre=[2,8]"], ["qk_pre=(2, 8)", "odd"]),
        (["attention.head_mix_pre=3"], ["head_mix_pre=3", "n_heads=2"]),
        (["attention.layers=[5]"], ["layers", "out of range"]),
        (["task.n_blocks=0"], ["task.n_blocks=0"]),
        (["seed=-1"], ["seed=-1"]),
        (["model.dim=63"], ["model.dim=63", "n_heads"]),
        (["attention.qk_pre=[2,7"], ["cannot parse"]),
        (["banana=1"], ["banana", "unknown config section"]),
    ],
)
def test_bad_config_names_key_and_allowed_values(overrides, words):
    with pytest.raises(ConfigError) as err:
        load_experiment(overrides)
    for word in words:
        assert word in str(err.value)


def test_cli_bad_config_exits_2_with_one_line_and_writes_nothing(workspace):
    result = cli("train", "train.lr=-1")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "train.lr=-1: expected a positive finite number" in result.stderr
    assert not workspace.exists()


def test_show_config_prints_the_resolved_tree(workspace):
    result = cli("train", "attention=mta_paper", "model=tiny", "--show-config")
    assert result.returncode == 0
    assert "group_norm: gated_scalar" in result.stdout and "max_steps:" in result.stdout
    assert AttentionSpec.from_dict({"layers": "every:4:2"}).layers == "every:4:2"


def test_the_typed_config_path_imports_without_torch():
    """Configs are built and checked (schema, model shape, attention spec) on a machine that only reads them."""

    code = (
        "import sys\n"
        "from mta_ablate.config.schema import TrainConfig\n"
        "from mta_ablate.model import ModelConfig, model_preset\n"
        "from mta_ablate.attention import preset\n"
        "ModelConfig(vocab_size=30, attention=preset('mta_paper'), **model_preset('tiny'))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
