"""Each task's own metrics (its evaluator in `EVALUATORS`), and the toy error and BabiLong
accuracy they use: teacher-forced scores over fresh, seeded task samples.

Teacher-forced exact match (every answer token is the argmax given the true prefix) equals greedy decoding
producing the answer, so these are the paper's error rates without a decoding loop.
"""

from __future__ import annotations

import torch
from torch import nn

from mta_ablate.evaluate.common import EVAL_SEED, answer_metrics, score_batch
from mta_ablate.evaluate.needle import needle_grid
from mta_ablate.evaluate.perplexity import corpus_perplexity


def task_answer_metrics(model: nn.Module, task, n: int = 512, seed: int = EVAL_SEED, batch_size: int = 64):
    """Score n samples of any task on its answer span -> per-sample tensors {exact, first, nll} and the batch."""
    batch = task.batch(n, seed)
    scored = score_batch(model, batch, batch_size)
    return answer_metrics(scored, batch), scored, batch


def toy_error(model: nn.Module, task, n: int = 1000, seed: int = EVAL_SEED, batch_size: int = 64) -> dict[str, float]:
    """find_block error: fraction of sequences with any wrong target letter (the paper's `err_seq`), plus
    `error_pos<i>` per target letter, `token_error` and the answer `loss` (nats)."""
    metrics, scored, batch = task_answer_metrics(model, task, n, seed, batch_size)
    mask = batch["answer_mask"]
    wrong = (~scored["correct"]) & mask  # (n, T)
    per_pos = wrong[mask].view(n, -1).float().mean(0)  # (n_target,)
    out = {
        "error": 1.0 - float(metrics["exact"].mean()),
        "token_error": float(wrong.sum()) / float(mask.sum()),
        "loss": float(metrics["nll"].mean()),
    }
    out.update({f"error_pos{i}": float(e) for i, e in enumerate(per_pos)})
    return out


def babilong_accuracy(
    model: nn.Module,
    qa: tuple[int, ...] = (1, 2, 3),
    context_lens: tuple[int, ...] = (256,),
    n: int = 200,
    seed: int = EVAL_SEED,
    batch_size: int = 32,
    **params,
) -> dict[str, float]:
    """Exact-match accuracy per QA task and context length: {"qa1/len256/exact": .., ..., "exact": mean}.

    `params` go to every BabiLongConfig (haystack, tokenizer, n_facts, ...)."""
    from mta_ablate.data.tasks import build_task

    out: dict[str, float] = {}
    for q in qa:
        for length in context_lens:
            task = build_task("babilong", qa=q, context_len=length, **params)
            metrics, _, _ = task_answer_metrics(model, task, n, seed, batch_size)
            out[f"qa{q}/len{length}/exact"] = float(metrics["exact"].mean())
            out[f"qa{q}/len{length}/first_token"] = float(metrics["first"].mean())
    exact = [v for k, v in out.items() if k.endswith("/exact")]
    out["exact"] = float(torch.tensor(exact).mean())
    return out


# Evaluators: (model, task, n_samples, final) -> the task's own metrics, unprefixed. `final=False` is the cheap
# version logged at every validation (val/<name>); `final=True` the whole set logged once under the task's family.


def lm_metrics(model: nn.Module, task, n_samples: int, final: bool) -> dict[str, float]:
    c = task.config
    r = corpus_perplexity(model, c.corpora, c.seq_len, c.tokenizer, max_windows=max(1, n_samples))
    out = {"ppl": r["avg/ppl"], "bpb": r["avg/bpb"]}  # the mean over corpora, as the paper
    for name in c.corpora:
        out[f"ppl/{name}"], out[f"bpb/{name}"] = r[f"{name}/ppl"], r[f"{name}/bpb"]
    return out


def find_block_metrics(model: nn.Module, task, n_samples: int, final: bool) -> dict[str, float]:
    r = toy_error(model, task, n=n_samples)
    return {k: v for k, v in r.items() if k.startswith(("error", "token_error"))}


def needle_metrics(model: nn.Module, task, n_samples: int, final: bool) -> dict[str, float]:
    c = task.config
    lengths = (c.context_len, 2 * c.context_len) if final else (c.context_len,)
    r = needle_grid(
        model,
        context_lens=tuple(t for t in lengths if t <= model.config.max_seq_len),
        n_needles=(1, 2, 4) if final else (c.n_needles,),
        n=n_samples,
        key_words=c.key_words,
        value_digits=c.value_digits,
        haystack=c.haystack,
        split=c.split,
        tokenizer=c.tokenizer,
    )
    r["accuracy"] = r.pop("exact")
    return r if final else {"accuracy": r["accuracy"]}


def babilong_metrics(model: nn.Module, task, n_samples: int, final: bool) -> dict[str, float]:
    c = task.config
    lengths = (c.context_len, 2 * c.context_len) if final else (c.context_len,)
    r = babilong_accuracy(
        model,
        qa=c.tasks,
        context_lens=tuple(t for t in lengths if t <= model.config.max_seq_len),
        n=n_samples,
        n_facts=c.n_facts,
        haystack=c.haystack,
        split=c.split,
        tokenizer=c.tokenizer,
    )
    r["accuracy"] = r.pop("exact")
    return r if final else {"accuracy": r["accuracy"]}


EVALUATORS = {
    "lm": lm_metrics,
    "find_block": find_block_metrics,
    "needle": needle_metrics,
    "babilong": babilong_metrics,
}
"""Each task's evaluator, by task name (a task's metric family and names are in `mta_ablate.metrics.TASK_METRICS`)."""
