"""Shared helpers: run a model in eval mode, in batches, on its own device; teacher-forced scoring."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from mta_ablate.model import token_nll

EVAL_SEED = 2_147_483_647
"""Default seed of evaluation samples: far from the small seeds training uses."""
VALIDATION_SEED = 2_000_003
"""Seed of the fixed validation batches scored during training (another stream than the final evaluation's)."""


def device_of(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[torch.device]:
    """model.eval() and no_grad for the block, restoring the training flag after; yields the device."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield device_of(model)
    finally:
        model.train(was_training)


def score_batch(model: nn.Module, batch: dict[str, torch.Tensor], batch_size: int = 32) -> dict[str, torch.Tensor]:
    """Teacher-forced pass over a task batch in chunks.

    Returns (B, T) tensors on the CPU: `nll` (nats per position, the same float32 cross-entropy `lm_loss`
    averages), `argmax` and `correct` (argmax == target).
    """
    nll, argmax = [], []
    with evaluating(model) as device:
        for i in range(0, batch["tokens"].shape[0], batch_size):
            tokens = batch["tokens"][i : i + batch_size].to(device)
            targets = batch["targets"][i : i + batch_size].to(device)
            logits = model(tokens)  # (b, T, V)
            nll.append(token_nll(logits, targets).cpu())
            argmax.append(logits.argmax(-1).cpu())
    argmax_t = torch.cat(argmax)
    return {"nll": torch.cat(nll), "argmax": argmax_t, "correct": argmax_t == batch["targets"]}


def answer_metrics(scored: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-sample (B,) metrics over the answer span: `exact` (every answer token is the argmax, the same as
    greedy decoding producing the answer), `first` (first answer token right) and `nll` (mean over the span)."""
    mask = batch["answer_mask"]
    wrong = (~scored["correct"]) & mask
    first_pos = mask.float().argmax(1)  # (B,) index of the first answer position
    rows = torch.arange(mask.shape[0])
    return {
        "exact": (~wrong.any(1)).float(),
        "first": scored["correct"][rows, first_pos].float(),
        "nll": (scored["nll"] * mask).sum(1) / mask.sum(1).clamp_min(1),
    }
