"""Checks of a config against the host it runs on (the type checks are `mta_ablate.typed`)."""

from __future__ import annotations

from mta_ablate.errors import ConfigError


def check_device(accelerator: str, where: str = "train.accelerator") -> None:
    """Fail now, in one line, when a job asks for CUDA on a host that has none (not later, in every trial)."""
    if accelerator != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{where}=cuda: no CUDA device is visible on this host; allowed here: auto, cpu"
            " (override train.accelerator=cpu, or run it on a GPU host)"
        )
