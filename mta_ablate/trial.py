"""`run_trial(config)`: one training run, start to finish. `mta-ablate train`, every sweep worker and the tests use it.

A straight line: MLflow run -> seed -> data -> model -> callbacks -> trainer -> fit -> final evaluation -> log.
The MLflow run ends FINISHED, or FAILED with a `mta.failure` tag, and the exception propagates to the caller
(`mlflow_store.recorded`).
On several devices (`train.devices` > 1) this process is rank 0 and the only one that logs; `mta_ablate.ranks` starts
the other ranks around `fit` and never leaves one running.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mta_ablate.config.schema import ExperimentConfig, as_plain
from mta_ablate.data.corpora import check_available
from mta_ablate.paths import mta_home
from mta_ablate.ranks import child_ranks
from mta_ablate.tracking import mlflow_store as store

log = logging.getLogger(__name__)


@dataclass
class TrialResult:
    run_id: str
    metrics: dict[str, float]
    steps: int
    checkpoint_dir: Path | None = None
    params: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds: setup (store, data, model), fit (training + validation), evaluate, finish (logging)."""


def checkpoint_root(config: ExperimentConfig) -> Path:
    return mta_home() / "checkpoints" / config.tracking.experiment / config.run_name


def find_resumable(mlflow_client, config: ExperimentConfig) -> tuple[str, Path] | None:
    """The newest unfinished run of this run name that left a `last.ckpt`, as (run id, checkpoint path)."""
    root = checkpoint_root(config)
    candidates = sorted(root.glob("*/last.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True)
    for ckpt in candidates:
        run_id = ckpt.parent.name
        try:
            status = mlflow_client.get_run(run_id).info.status
        except Exception:  # the run is not in this store
            continue
        if status != "FINISHED":
            return run_id, ckpt
    return None


def start_run(mlflow_client, config: ExperimentConfig, tags: dict[str, str], parent_run_id: str | None) -> str:
    """Create the MLflow run with its identity tags (arm, seed; sweep and trial from a sweep), state `running`."""
    exp_id = store.experiment_id(mlflow_client, config.tracking.experiment)
    all_tags = {
        store.TAG_ARM: config.arm,
        store.TAG_SEED: str(config.seed),
        store.TAG_KIND: "train",
        **{k: str(v) for k, v in config.tracking.tags.items()},
        **tags,
    }
    if parent_run_id:
        all_tags[store.PARENT_TAG] = parent_run_id
    all_tags[store.TAG_STATE] = "running"
    return store.retried(mlflow_client.create_run, exp_id, run_name=config.run_name, tags=all_tags).info.run_id


def log_run_inputs(mlflow_client, run_id: str, config: ExperimentConfig) -> None:
    """What ran: the flattened config as params (the keys that were set, as stored), config.yaml (every field, from the
    typed config: `experiment_from_dict` reads it back) and environment.json as artifacts."""
    store.log_params(mlflow_client, run_id, store.flatten(config.resolved))
    with tempfile.TemporaryDirectory() as tmp:
        import yaml

        (Path(tmp) / "config.yaml").write_text(yaml.safe_dump(as_plain(config), sort_keys=False))
        (Path(tmp) / "environment.json").write_text(json.dumps(store.environment(), indent=2))
        mlflow_client.log_artifacts(run_id, tmp)


def open_run(client, config: ExperimentConfig, tags: dict[str, str], parent_run_id: str | None):
    """(run id, checkpoint to resume from or None): the unfinished run this one resumes (train.resume), marked running
    again, or a new run."""
    resumable = find_resumable(client, config) if config.train.resume else None
    if config.train.resume and resumable is None:
        log.info("%s: no unfinished checkpoint to resume; starting fresh", config.run_name)
    if resumable is None:
        return start_run(client, config, tags, parent_run_id), None
    run_id, ckpt = resumable
    client.update_run(run_id, status="RUNNING")
    store.retried(client.set_tag, run_id, store.TAG_STATE, "running")
    if store.TAG_FAILURE in client.get_run(run_id).data.tags:  # the interruption it resumes from is over
        client.delete_tag(run_id, store.TAG_FAILURE)
    return run_id, ckpt


def run_trial(
    config: ExperimentConfig,
    *,
    reporter=None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    tracking_uri: str | None = None,
    on_start=None,
    leader=None,
) -> TrialResult:
    """Train and evaluate one configuration; returns the MLflow run id and the final metrics.

    reporter(step, val_metrics) is called after every validation and may raise to stop (pruning); an exception with
    `mlflow_status` / `mta_state` attributes sets the run's status and `mta.state` tag (default FAILED / failed).
    on_start(run_id) is called once the MLflow run exists. `leader` (a cluster's `cluster.Leader`) hands the other ranks
    of a multi-node trial to the cluster's followers instead of starting them here."""
    clock = {"start": time.perf_counter()}
    check_available(getattr(config.task, "corpora_needed", ()))  # before anything is stored
    _set_threads(config)
    client = store.client(tracking_uri)
    run_id, ckpt = open_run(client, config, tags or {}, parent_run_id)
    checkpoint_dir = checkpoint_root(config) / run_id
    log.info("run %s (%s) -> %s; %s", config.run_name, run_id, store.tracking_uri(tracking_uri), derived(config))
    with store.recorded(client, run_id):
        if on_start is not None:
            on_start(run_id)
        if ckpt is None:
            log_run_inputs(client, run_id, config)
        with child_ranks(config, run_id, ckpt, checkpoint_dir, leader) as plan:  # ranks 1.. of a multi-device trial
            module, task, trainer, logger = _fit(config, client, run_id, checkpoint_dir, ckpt, reporter, clock, plan)
        clock["evaluate"] = time.perf_counter()
        metrics = _final_metrics(module, task, trainer, logger, config)
        clock["finish"] = time.perf_counter()
        logger.log_metrics(metrics, step=trainer.global_step)
        logger.flush()
        _log_mta_figure(client, run_id, module.model, config)
    counts = module.model.count_params()
    return TrialResult(run_id, metrics, trainer.global_step, checkpoint_dir, counts, _timings(clock))


def derived(config: ExperimentConfig) -> str:
    """What the derive step gave this trial, for its first log line."""
    task = config.task
    return f"derived model.vocab_size={config.model.vocab_size} from task {task.name} ({task.seq_len}-token sequences)"


def _set_threads(config: ExperimentConfig) -> None:
    import torch

    if config.train.threads:
        torch.set_num_threads(config.train.threads)


def _timings(clock: dict[str, float]) -> dict[str, float]:
    return {
        "setup_s": clock["fit"] - clock["start"],
        "fit_s": clock["evaluate"] - clock["fit"],
        "evaluate_s": clock["finish"] - clock["evaluate"],
        "finish_s": time.perf_counter() - clock["finish"],
    }


def train_rank(config: ExperimentConfig, plan, ckpt: str | None, checkpoint_dir: str) -> None:
    """Ranks 1..N-1 of a multi-device trial (`rank_entry`): train this rank's share, log nothing."""
    _set_threads(config)
    _fit(config, None, None, Path(checkpoint_dir), ckpt, None, {}, plan)


def _fit(config: ExperimentConfig, client, run_id, checkpoint_dir: Path, ckpt, reporter, clock: dict, plan=None):
    """Seed, data, model and trainer, then training (resumed from `ckpt` when given). Returns what evaluation needs.

    `plan` (a multi-device trial's `ranks.Plan`) picks this process's rank: only rank 0 (the one with an MLflow
    `client`) logs; a pruning decision stops every rank and is raised here, on rank 0, once training has ended."""
    import lightning as L

    from lightning_modules.callbacks import ReportValidation, build_callbacks, trainer_kwargs
    from lightning_modules.data_module import TaskDataModule
    from lightning_modules.lm_module import LMModule
    from mta_ablate.attention.init import init_digest
    from mta_ablate.data import task_from_config
    from mta_ablate.strategy import strategy, whole_model
    from mta_ablate.tracking.lightning_logger import MlflowRunLogger

    train = config.train
    L.seed_everything(config.seed, workers=True, verbose=False)
    task = task_from_config(config.task)
    module = LMModule(config.model, train, task, seed=config.seed)
    if ckpt is None and client is not None:
        counts = module.model.count_params()
        store.log_params(client, run_id, {f"model/params/{k}": str(v) for k, v in counts.items()})
        client.log_dict(run_id, init_digest(module.model), "init_digest.json")
    rank, world = (plan.rank, plan.world_size) if plan else (0, 1)
    data = TaskDataModule(task, train.batch_size, config.seed, train.val_batches, rank, world, train.accumulation)
    logger = MlflowRunLogger(client, run_id) if client is not None else None
    callbacks = build_callbacks(train, checkpoint_dir, reporter)
    trainer = L.Trainer(
        logger=logger or False,
        callbacks=callbacks,
        default_root_dir=str(checkpoint_dir),
        **trainer_kwargs(train, plan and strategy(train, plan)),
    )
    if logger is not None:
        logger.step_fn = lambda: trainer.global_step
    clock["fit"] = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt and str(ckpt), weights_only=True)  # never runs code
    except SystemExit:
        if trainer.interrupted:  # Lightning answers Ctrl-C / SIGTERM with sys.exit(1): it is an interruption
            raise KeyboardInterrupt("training was interrupted") from None
        raise
    if trainer.interrupted:
        raise KeyboardInterrupt("training was interrupted")
    stopped = next((c.stopped for c in callbacks if isinstance(c, ReportValidation)), None)
    if stopped is not None:
        raise stopped
    return whole_model(trainer, module, config), task, trainer, logger


def _final_metrics(module, task, trainer, logger, config: ExperimentConfig) -> dict[str, float]:
    """The final evaluation, where and how training ran: on the strategy's device (Lightning's teardown has moved
    the module to the CPU when `fit` returns) and under the training precision (bf16 autocast for bf16-mixed)."""
    from lightning_modules.evaluation import final_metrics

    model = module.model.to(trainer.strategy.root_device)
    with trainer.precision_plugin.forward_context():
        evaluated = final_metrics(model, task, config.train)
    metrics = {**evaluated, **_cost_summary(logger.latest, passes=config.train.accumulation)}
    passes = config.train.accumulation
    if getattr(module, "flops_per_batch", None):  # training compute, for comparisons at equal FLOPs
        step_flops = float(module.flops_per_batch) * trainer.world_size * passes  # every rank's passes
        metrics["perf/flops_per_step"] = step_flops
        metrics["perf/train_flops"] = step_flops * trainer.global_step
    return metrics


def _cost_summary(latest: dict[str, float], passes: int = 1) -> dict[str, float]:
    """Throughput and memory at the end of training, from what ThroughputMonitor and PeakMemory logged. A "batch"
    there is one forward/backward pass; a step is `passes` of them."""
    out = {}
    if latest.get("train/device/batches_per_sec"):
        out["perf/step_ms"] = 1000.0 * passes / latest["train/device/batches_per_sec"]
        out["perf/tokens_per_s"] = latest.get("train/items_per_sec", latest["train/device/items_per_sec"])  # all ranks
    if "perf/peak_mem_mib" in latest:
        out["perf/peak_mem_mib"] = latest["perf/peak_mem_mib"]
    return out


def _log_mta_figure(client, run_id: str, model, config: ExperimentConfig) -> None:
    from mta_ablate.tracking.figures import plot_mta_parameters

    arrays = {
        name: p.detach().float().cpu().numpy()
        for name, p in model.named_parameters()
        if name.endswith(("mta_pre_kernel", "mta_post_kernel", "mta_pre_head_mix", "mta_post_head_mix"))
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = plot_mta_parameters(arrays, Path(tmp) / "mta_parameters.png", title=f"{config.arm}, seed {config.seed}")
        if path is not None:
            client.log_artifact(run_id, str(path))
