"""Task metrics during training (validation) and at the end (final evaluation), from `mta_ablate.evaluate`.

Keys, by when they are logged:
    every validation   val/loss, val/ppl, val/error, ... (generic, on fixed batches)   plus `task_metrics(final=False)`:
                       lm: val/ppl (mean over corpora, as the paper), val/ppl/<corpus>, val/bpb, val/bpb/<corpus>
                       find_block: val/error (the paper's err_seq), val/error_pos<i>
                       needle / babilong: val/accuracy
    end of training    final/loss, final/ppl, ... (generic) plus `task_metrics(final=True)` under a family name:
                       lm: final/ppl, final/ppl/<corpus>, final/bpb/...   find_block: toy/error, toy/error_pos<i>
                       needle: needle/accuracy, needle/first_token, needle/wrong_needle and the grid
                       needle/ctx<T>/k<n>[/depth<a>-<b>]/exact at 1, 2, 4 needles x (T, 2T)
                       babilong: babilong/accuracy, babilong/qa<q>/len<T>/exact
"""

from __future__ import annotations

import math

import torch

from lightning_modules.data_module import validation_batches
from mta_ablate.config.schema import TrainConfig
from mta_ablate.evaluate.tasks import EVALUATORS
from mta_ablate.metrics import family
from mta_ablate.model import token_nll


def task_metrics(model, task, n_samples: int, final: bool) -> dict[str, float]:
    """The task's own metrics (unprefixed) on `n_samples` fixed evaluation samples, by its registered evaluator."""
    return EVALUATORS[task.name](model, task, n_samples, final)


def forward_rows(model, tokens: torch.Tensor, rows: int) -> torch.Tensor:
    """model(tokens), run `rows` sequences at a time (a training pass's size), concatenated."""
    if tokens.shape[0] <= rows:
        return model(tokens)
    return torch.cat([model(part) for part in tokens.split(rows)])


class ScoreSums:
    """Running sums over scored batches -> loss (weighted, as trained), ppl, error and answer accuracy."""

    def __init__(self) -> None:
        self.s = dict.fromkeys(("loss_w", "weight", "nll", "tokens", "wrong_rows", "rows", "right", "answers"), 0.0)

    @torch.no_grad()
    def add(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        logits = logits.float()
        targets, weight, answer = batch["targets"], batch["loss_weight"], batch["answer_mask"]
        nll = token_nll(logits, targets)
        s, scored = self.s, batch["loss_mask"]
        s["loss_w"] += float((nll * weight).sum())
        s["weight"] += float(weight.sum())
        s["nll"] += float(nll[scored].sum())
        s["tokens"] += float(scored.sum())
        correct = logits.argmax(-1) == targets
        has_answer = answer.any(-1)
        s["wrong_rows"] += float(((~correct & answer).any(-1) & has_answer).sum())
        s["rows"] += float(has_answer.sum())
        s["right"] += float((correct & answer).sum())
        s["answers"] += float(answer.sum())

    @property
    def scored(self) -> bool:
        return self.s["weight"] > 0

    def metrics(self, owned=()) -> dict[str, float]:
        """loss, ppl and, for tasks with answers, error (any wrong answer token per sequence) and answer_acc; none of
        the names in `owned`, which the task's own evaluator computes (find_block's validation `error` is the paper's
        err_seq on fresh samples, as its final toy/error)."""
        s = self.s
        if not self.scored:
            return {}
        out = {"loss": s["loss_w"] / s["weight"], "ppl": math.exp(min(50.0, s["nll"] / max(1.0, s["tokens"])))}
        if s["rows"]:
            out["error"] = s["wrong_rows"] / s["rows"]
            out["answer_acc"] = s["right"] / s["answers"]
        return {k: v for k, v in out.items() if k not in owned}


@torch.no_grad()
def final_metrics(model, task, train: TrainConfig) -> dict[str, float]:
    """Generic final/loss, final/ppl, final/error on `eval_batches` fixed batches, then the task's final metrics."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = ScoreSums()
    for batch in validation_batches(task, train.eval_batches, train.batch_size):
        batch = {k: v.to(device) for k, v in batch.items()}
        scores.add(forward_rows(model, batch["tokens"], train.rows_per_pass), batch)
    model.train(was_training)
    out = {f"final/{k}": v for k, v in scores.metrics().items()}
    prefix = family(task.name)
    out.update({f"{prefix}/{k}": v for k, v in task_metrics(model, task, train.eval_samples, final=True).items()})
    return out
