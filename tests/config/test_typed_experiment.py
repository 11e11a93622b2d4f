"""The experiment is one typed object: each task's config derives the model's vocabulary and the sequence length
without data, a trial's config is its arm's changed by `dataclasses.replace`, and config.yaml (`as_plain`) reads back
into the same config."""

import dataclasses

import pytest
import yaml

from mta_ablate.config import ConfigError
from mta_ablate.config.compose import group_options, load_experiment
from mta_ablate.config.schema import as_plain, experiment_from_dict, with_changes
from mta_ablate.config.tasks import TASK_CONFIGS, task_config


def sections(config):
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "resolved"}


@pytest.mark.parametrize("task", sorted(TASK_CONFIGS))
def test_each_task_config_derives_what_the_task_it_builds_has(task):
    from mta_ablate.data import task_from_config

    config = load_experiment([f"task={task}", "model.max_seq_len=4096"]).task
    built = task_from_config(config)
    assert (built.vocab_size, built.seq_len) == (config.vocab_size, config.seq_len)


def test_text_tasks_take_their_vocabulary_from_the_tokenizer_spec():
    assert task_config("lm", tokenizer="bpe:4096").vocab_size == 4096
    assert task_config("needle").vocab_size == 259
    with pytest.raises(ConfigError, match="task.tokenizer='bpe:12'"):
        task_config("babilong", tokenizer="bpe:12")


@pytest.mark.parametrize("attention", group_options("attention"))
@pytest.mark.parametrize("task", group_options("task"))
def test_config_yaml_reads_back_into_the_same_experiment(task, attention):
    overrides = [f"task={task}", f"attention={attention}", "model.max_seq_len=4096", "model.n_layers=4", "seed=7"]
    config = load_experiment(overrides)
    plain = yaml.safe_load(yaml.safe_dump(as_plain(config), sort_keys=False))
    assert sections(experiment_from_dict(plain, arm=config.arm)) == sections(config)


def test_a_trial_is_its_arm_changed_by_replace():
    arm = load_experiment(["model=toy", "attention=mta_toy", "task=find_block"], arm="mta")
    changes = {"seed": 3, "tracking.run_name": "mta-seed3", "train.threads": 1, "train.max_steps": 40}
    trial = with_changes(arm, changes)
    assert (trial.seed, trial.run_name, trial.train.threads, trial.train.max_steps) == (3, "mta-seed3", 1, 40)
    assert trial.model is arm.model and trial.task is arm.task  # untouched sections are shared, not rebuilt
    rebuilt = experiment_from_dict(trial.resolved, arm="mta")  # the stored form got the same changes
    assert sections(rebuilt) == sections(trial)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"train.max_steps": 0}, ["train.max_steps=0", ">= 1"]),
        ({"train.lr": "fast"}, ["train.lr='fast'", "a number"]),
        ({"seed": -1}, ["seed=-1"]),
        ({"task.n_blocks": 3}, ["task.n_blocks", "a trial changes seed"]),
        ({"train.max_step": 3}, ["train.max_step", "a trial changes seed"]),
    ],
)
def test_a_trial_change_is_checked_as_a_config_is(changes, words):
    arm = load_experiment(["model=toy", "task=find_block"])
    with pytest.raises(ConfigError) as err:
        with_changes(arm, changes)
    assert all(w in str(err.value) for w in words), str(err.value)
