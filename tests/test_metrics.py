"""The metric registry: every task has one entry, every key a report meets has a meaning, no torch needed."""

import subprocess
import sys

import pytest

from mta_ablate import metrics
from mta_ablate.data.tasks import TASKS


def test_every_task_has_one_entry_a_config_and_a_callable_evaluator():
    from mta_ablate.config.tasks import TASK_CONFIGS
    from mta_ablate.evaluate.tasks import EVALUATORS

    assert set(metrics.TASK_METRICS) == set(TASKS) == set(TASK_CONFIGS) == set(EVALUATORS)
    assert all(callable(f) for f in EVALUATORS.values())
    for entry in metrics.TASK_METRICS.values():
        assert entry.validation.startswith("val/") and entry.headline.startswith(f"{entry.family}/")


@pytest.mark.parametrize(
    "key, direction, rate",
    [
        ("final/ppl", "minimize", False),
        ("final/ppl/books", "minimize", False),
        ("val/error", "minimize", True),
        ("toy/error_pos3", "minimize", True),
        ("needle/ctx512/k2/depth0-20/exact", "maximize", True),
        ("needle/ctx512/k2/wrong_needle", "minimize", True),
        ("babilong/qa1/len512/first_token", "maximize", True),
        ("perf/tokens_per_s", "maximize", False),
        ("perf/peak_mem_mib", "minimize", False),
        ("final/answer_acc", "maximize", True),
    ],
)
def test_meaning_of_a_key(key, direction, rate):
    assert metrics.direction(key) == direction
    assert metrics.is_rate(key) is rate


def test_unknown_keys_have_no_meaning_and_default_to_minimize():
    assert metrics.describe("custom/score") is None
    assert metrics.direction("custom/score") == "minimize" and not metrics.is_rate("custom/score")


def test_validation_key_of_each_headline_and_of_other_objectives():
    assert [metrics.validation_key(t.headline) for t in metrics.TASK_METRICS.values()] == [
        "val/ppl",
        "val/error",
        "val/accuracy",
        "val/accuracy",
    ]
    assert metrics.validation_key("final/ppl/books") == "val/ppl/books"
    assert metrics.validation_key("val/error") == "val/error"
    assert metrics.validation_key("needle/first_token") == "val/loss"
    assert metrics.validation_key("perf/step_ms", other="perf/step_ms") == "perf/step_ms"


def test_the_registry_imports_without_torch():
    code = "import sys, mta_ablate.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
