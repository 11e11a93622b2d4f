"""`train.micro_batch` (gradient accumulation) and `train.activation_checkpointing` train the same model as one
full pass: the same global batch, loss normalisation and gradient, so the same losses up to the order of fp32 sums."""

import pytest
from mlflow.tracking import MlflowClient

from mta_ablate.config.compose import load_experiment
from mta_ablate.errors import ConfigError
from mta_ablate.tracking.mlflow_store import tracking_uri
from mta_ablate.trial import run_trial

RUN = ["model=toy", "task=find_block", "attention=mta_toy", "attention.qk_pre=[2,7]", "train.max_steps=6"]
RUN += ["train.val_every=3", "train.log_every=1", "train.batch_size=16", "train.val_batches=1", "train.eval_batches=2"]
RUN += ["train.val_samples=4", "train.eval_samples=4", "train.warmup_steps=0", "train.lr=3e-3"]


def _losses(result) -> list[float]:
    client = MlflowClient(tracking_uri())
    return [m.value for m in sorted(client.get_metric_history(result.run_id, "train/loss"), key=lambda m: m.step)]


@pytest.mark.usefixtures("tracked_workspace")
def test_micro_batches_and_checkpointing_train_the_one_pass_model():
    whole = run_trial(load_experiment([*RUN, "tracking.run_name=whole"]))
    micro = run_trial(load_experiment([*RUN, "train.micro_batch=4", "tracking.run_name=micro"]))
    recomputed = run_trial(load_experiment([*RUN, "train.activation_checkpointing=true", "tracking.run_name=ckpt"]))
    assert whole.steps == micro.steps == recomputed.steps == 6
    reference = _losses(whole)
    assert len(reference) == 6
    assert _losses(micro) == pytest.approx(reference, rel=1e-4)  # 4 passes of 4 rows: another order of sums
    assert _losses(recomputed) == pytest.approx(reference, rel=1e-6)
    for key in ("final/loss", "toy/error"):
        assert micro.metrics[key] == pytest.approx(whole.metrics[key], rel=1e-4), key
    assert micro.metrics["perf/flops_per_step"] == pytest.approx(whole.metrics["perf/flops_per_step"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.micro_batch=5", "allowed: 1, 2, 4, 8, 16"),
        ("train.micro_batch=-1", "expected an integer >= 0"),
        ("train.lr=nan", "positive finite"),
        ("train.lr=inf", "positive finite"),
    ],
)
def test_bad_micro_batch_and_learning_rate_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(["model=toy", "task=find_block", "train.batch_size=16", override])


@pytest.mark.usefixtures("tracked_workspace")
def test_a_resume_continues_in_micro_batches_and_refuses_another_micro_batch():
    """Killed after its first checkpoint (simulated: the run's max_steps grows), a micro-batched run resumes where it
    was, in the same units; resuming it with another micro-batch is refused (its counters are in passes)."""
    first = run_trial(load_experiment([*RUN, "train.micro_batch=4", "tracking.run_name=r", "train.max_steps=3"]))
    assert first.steps == 3
    client = MlflowClient(tracking_uri())
    client.update_run(first.run_id, status="FAILED")  # as an interrupted run is left
    with pytest.raises(ValueError, match="pass\\(es\\) per step"):
        run_trial(load_experiment([*RUN, "train.micro_batch=8", "tracking.run_name=r", "train.resume=true"]))
    client.update_run(first.run_id, status="FAILED")
    resumed = run_trial(load_experiment([*RUN, "train.micro_batch=4", "tracking.run_name=r", "train.resume=true"]))
    assert resumed.run_id == first.run_id and resumed.steps == 6
    steps = [m.step for m in client.get_metric_history(first.run_id, "train/loss")]
    assert sorted(steps) == [1, 2, 3, 4, 5, 6]  # every step logged once, in the same units after the resume
