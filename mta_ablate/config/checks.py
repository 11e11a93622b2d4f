"""Checks of a config against the host it runs on (the type checks are `mta_ablate.typed`)."""

from __future__ import annotations

import os

from mta_ablate.errors import ConfigError


def check_device(train, where: str = "train.accelerator", owned: int | None = None, cluster=None) -> None:
    """Fail now, in one line, when a job asks for more than this host has (not later, in every trial): CUDA on a
    host without it, more GPUs than are visible (or than a worker owns: `owned`), FSDP without CUDA, or a trial over
    several nodes started without the cluster (`cluster.Cluster`) that starts its other ranks, or with one of
    another size."""
    import torch

    cuda = train.accelerator == "cuda" or (train.accelerator == "auto" and torch.cuda.is_available())
    if cuda:
        check_visible_devices(train)
    if train.accelerator == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{where}=cuda: no CUDA device is visible on this host; allowed here: auto, cpu"
            " (override train.accelerator=cpu, or run it on a GPU host)"
        )
    if train.strategy == "fsdp" and not cuda and train.world_size > 1:
        raise ConfigError("train.strategy=fsdp: Lightning's FSDP runs on CUDA devices only; allowed on CPU: ddp, auto")
    visible = torch.cuda.device_count() if cuda else None
    have = min(owned, visible) if owned and visible is not None else (owned or visible)
    if have is not None and train.devices > have:
        what = f"this worker owns {have}" if owned else f"{have} CUDA device(s) are visible"
        raise ConfigError(f"train.devices={train.devices}: {what}; allowed: 1..{have}")
    if cluster is not None and train.world_size != cluster.world_size:
        raise ConfigError(
            f"train.devices x train.num_nodes = {train.world_size}: this worker was launched as one of "
            f"{cluster.world_size} ranks; allowed: a trial of exactly {cluster.world_size} ranks"
        )
    if train.num_nodes > 1 and cluster is None:
        raise ConfigError(
            f"train.num_nodes={train.num_nodes}: a trial over several nodes needs its ranks started by the cluster "
            "(srun ... mta-ablate worker, see docs/scale-out.md); on one host use train.devices"
        )


def check_visible_devices(train, environ=None) -> None:
    """A multi-device trial's rank picks GPU `local rank` among those its process sees, so every rank must see all
    of its node's `train.devices` GPUs. A launcher that gives each task its own GPU (`srun --gpus-per-task=1`:
    CUDA_VISIBLE_DEVICES lists one) would end in "invalid device ordinal" on rank 1; refuse it here, in one line."""
    listed = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if listed is None or train.world_size == 1:
        return
    seen = len([d for d in listed.split(",") if d.strip()])
    if seen < train.devices:
        raise ConfigError(
            f"train.devices={train.devices}: this process sees {seen} GPU(s) (CUDA_VISIBLE_DEVICES={listed}), but "
            f"each rank picks its GPU by local rank among its node's {train.devices}; launch with "
            f"--gpus-per-node={train.devices} (every task sees the node's GPUs), not --gpus-per-task"
        )


def check_workers(trains: list, workers: int, devices_per_trial: int | None, cluster=None) -> int:
    """The devices each worker owns (default: the most any arm's trial uses), checked against every arm's train
    config and, on CUDA, against the GPUs this host shows (workers x devices). Returns it."""
    import torch

    owned = devices_per_trial if devices_per_trial is not None else max(t.devices for t in trains)
    if owned < 1:
        raise ConfigError(f"--devices-per-trial={owned}: expected an integer >= 1")
    for train in trains:
        if train.devices > owned:
            raise ConfigError(
                f"train.devices={train.devices}: more than --devices-per-trial={owned} gives each worker; "
                f"allowed: --devices-per-trial >= {train.devices}"
            )
        check_device(train, owned=owned, cluster=cluster)
    cuda = any(t.accelerator == "cuda" for t in trains) or (
        torch.cuda.is_available() and any(t.accelerator == "auto" for t in trains)
    )
    if cuda and workers * owned > torch.cuda.device_count():
        raise ConfigError(
            f"--workers={workers} x --devices-per-trial={owned}: {workers * owned} GPUs, but this host shows "
            f"{torch.cuda.device_count()}; allowed: --workers <= {torch.cuda.device_count() // owned}"
        )
    return owned
