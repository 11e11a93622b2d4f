"""What every task shares: the batch layout, seeded generators, validation helpers and `key=value` overrides
(`typed.parse_overrides`).

A task batch is a dict of tensors, all (B, T) with T = task.seq_len, built from (B, T + 1) sequences:

    tokens      long   inputs, sequence[:, :-1]
    targets     long   next tokens, sequence[:, 1:] (already aligned: logits[:, i] predicts targets[:, i])
    loss_weight float  weight of each position in the loss (answer 1.0, context `lm_weight`, padding 0)
    loss_mask   bool   loss_weight > 0
    answer_mask bool   positions the task's metric scores (the target block, the needle value, the answer)

`lm_loss(logits, targets, batch["loss_weight"])` is the weighted mean NLL; with a bool mask it is the plain mean.
"""

from __future__ import annotations

import numpy as np
import torch

from mta_ablate.config.tasks import check_int
from mta_ablate.errors import ConfigError
from mta_ablate.typed import parse_overrides

__all__ = ["as_generator", "check_int", "make_batch", "parse_overrides"]


def as_generator(seed: int | np.random.Generator) -> np.random.Generator:
    """A numpy Generator from a seed (or the generator itself, so callers can keep one stream)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r}: expected an integer >= 0 or a numpy Generator")
    return np.random.default_rng(int(seed))


def make_batch(seq: np.ndarray, weight: np.ndarray, answer: np.ndarray) -> dict[str, torch.Tensor]:
    """(B, T+1) sequences, per-token loss weights and answer flags (indexed like `seq`) -> the batch dict.

    weight[:, j] and answer[:, j] describe token seq[:, j] as a *target*, so position j - 1 predicts it.
    """
    w = torch.from_numpy(np.ascontiguousarray(weight[:, 1:], dtype=np.float32))
    return {
        "tokens": torch.from_numpy(np.ascontiguousarray(seq[:, :-1], dtype=np.int64)),
        "targets": torch.from_numpy(np.ascontiguousarray(seq[:, 1:], dtype=np.int64)),
        "loss_weight": w,
        "loss_mask": w > 0,
        "answer_mask": torch.from_numpy(np.ascontiguousarray(answer[:, 1:], dtype=bool)),
    }


def answer_at_end_batch(items: list[dict], lm_weight: float) -> dict[str, torch.Tensor]:
    """Batch of samples whose last `answer_len` tokens are the answer (needle, babilong): answer weight 1, the
    text `lm_weight`; left padding and <bos> (items with a `pad` count) are never targets."""
    seq = np.stack([it["seq"] for it in items])
    weight = np.full(seq.shape, lm_weight, dtype=np.float32)
    answer = np.zeros(seq.shape, dtype=bool)
    for i, it in enumerate(items):
        if "pad" in it:
            weight[i, : it["pad"] + 1] = 0.0
        answer[i, -it["answer_len"] :] = True
    weight[answer] = 1.0
    return make_batch(seq, weight, answer)


def answer_at_end_samples(items: list[dict], tokenizer, meta: tuple[str, ...]) -> list[dict]:
    """JSON-ready samples: the decoded `input` (everything before the answer), `target` and the `meta` fields."""
    out = []
    for it in items:
        cut = len(it["seq"]) - it["answer_len"]
        decoded = {"input": tokenizer.decode(it["seq"][:cut]), "target": tokenizer.decode(it["seq"][cut:])}
        out.append({**decoded, **{k: it[k] for k in meta}})
    return out


class AnswerAtEndTask:
    """Shared by tasks whose samples end with their answer (needle, babilong). A subclass defines `_one(rng)` (one
    sample dict with `seq` and `answer_len`), `config.lm_weight`, `tokenizer`, and `META`, the sample fields that
    `samples()` shows."""

    META: tuple[str, ...] = ()

    def _load_haystack(self, config) -> None:
        """config, tokenizer, haystack tokens (of config.haystack's config.split), vocab_size and seq_len."""
        from mta_ablate.data.corpora import load_corpus

        self.config = config
        corpus = load_corpus(config.haystack, config.tokenizer)
        self.tokenizer = corpus.tokenizer
        self.haystack = corpus.split(config.split).tokens
        self.vocab_size, self.seq_len = config.vocab_size, config.seq_len
        check_vocab(self.tokenizer, config)

    def generate(self, n: int, seed: int | np.random.Generator) -> list[dict]:
        rng = as_generator(seed)
        return [self._one(rng) for _ in range(n)]

    def to_batch(self, items: list[dict]) -> dict[str, torch.Tensor]:
        return answer_at_end_batch(items, self.config.lm_weight)

    def batch(self, n: int, seed: int | np.random.Generator) -> dict[str, torch.Tensor]:
        """n samples -> {tokens, targets, loss_weight, loss_mask, answer_mask}, each (n, context_len)."""
        check_int("batch_size", n, 1)
        return self.to_batch(self.generate(n, seed))

    def samples(self, n: int, seed: int | np.random.Generator) -> list[dict]:
        return answer_at_end_samples(self.generate(n, seed), self.tokenizer, self.META)


def check_vocab(tokenizer, config) -> None:
    """The tokenizer's ids fit the vocabulary the config derived from its spec (the model is built for that)."""
    if tokenizer.vocab_size > config.vocab_size:
        raise ConfigError(
            f"task.tokenizer={config.tokenizer!r}: {tokenizer.vocab_size} tokens, more than the {config.vocab_size} "
            "its spec names"
        )
