"""Evaluation: pure functions that take a model and return plain dicts of floats.

    corpus_perplexity(model, ["code", "books"], seq_len=256)    # ppl and bits-per-byte per corpus
    needle_grid(model, context_lens=(256,), n_needles=(1, 2, 4)) # exact / first token / wrong needle, by depth
    toy_error(model, build_task("find_block"))                   # find_block error (the paper's err_seq)
    babilong_accuracy(model, qa=(1, 2, 3), context_lens=(256,))  # exact match per QA task and length

Models are run in eval mode under no_grad on their own device; the training flag is restored afterwards.
"""

from mta_ablate.evaluate.common import EVAL_SEED, VALIDATION_SEED, answer_metrics, score_batch
from mta_ablate.evaluate.needle import greedy_answers, needle_grid
from mta_ablate.evaluate.perplexity import corpus_perplexity, window_perplexity
from mta_ablate.evaluate.tasks import babilong_accuracy, task_answer_metrics, toy_error

__all__ = [
    "EVAL_SEED",
    "VALIDATION_SEED",
    "answer_metrics",
    "babilong_accuracy",
    "corpus_perplexity",
    "greedy_answers",
    "needle_grid",
    "score_batch",
    "task_answer_metrics",
    "toy_error",
    "window_perplexity",
]
