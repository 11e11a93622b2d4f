"""`lm`: next-token prediction over a weighted mixture of corpora.

Training windows are drawn at random offsets of each corpus's train split (the corpus of each row is drawn by
`weights`); evaluation uses `validation_windows`, fixed non-overlapping windows of the validation split that
are the same for every model and every run.
"""

from __future__ import annotations

import numpy as np
import torch

from mta_ablate.config.tasks import LMConfig
from mta_ablate.data.tasks.base import as_generator, check_int, check_vocab, make_batch
from mta_ablate.errors import ConfigError


def validation_windows(tokens: np.ndarray, seq_len: int, max_windows: int | None = None) -> np.ndarray:
    """Fixed evaluation windows (W, seq_len + 1) of a token array: consecutive windows overlapping by one
    token (so targets tile the text), evenly thinned to at most `max_windows`. Deterministic."""
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise ConfigError(f"seq_len={seq_len}: longer than the validation split ({len(tokens)} tokens)")
    index = np.arange(n)
    if max_windows is not None and n > max_windows:
        index = np.unique(np.linspace(0, n - 1, max_windows).round().astype(np.int64))
    starts = index * seq_len
    return np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)


class LMTask:
    name = "lm"

    def __init__(self, config: LMConfig):
        from mta_ablate.data.corpora import get_tokenizer, load_corpus

        self.config = config
        self.tokenizer = get_tokenizer(config.tokenizer, tuple(config.corpora))
        self.corpora = {name: load_corpus(name, config.tokenizer, tuple(config.corpora)) for name in config.corpora}
        self.vocab_size, self.seq_len = config.vocab_size, config.seq_len
        check_vocab(self.tokenizer, config)
        w = np.ones(len(config.corpora)) if config.weights is None else np.asarray(config.weights, dtype=np.float64)
        self.weights = w / w.sum()
        for name, corpus in self.corpora.items():
            if corpus.train.n_tokens <= self.seq_len + 1:
                raise ConfigError(f"task.seq_len={self.seq_len}: corpus {name!r} has {corpus.train.n_tokens} tokens")

    def batch(self, n: int, seed: int | np.random.Generator) -> dict[str, torch.Tensor]:
        """n random training windows -> {tokens, targets, loss_weight, loss_mask, answer_mask}, each (n, T)."""
        check_int("batch_size", n, 1)
        rng = as_generator(seed)
        which = rng.choice(len(self.corpora), size=n, p=self.weights)
        seq = np.empty((n, self.seq_len + 1), dtype=np.int64)
        for i, corpus in enumerate(self.corpora.values()):
            rows = np.nonzero(which == i)[0]
            if rows.size:
                tokens = corpus.train.tokens
                starts = rng.integers(0, len(tokens) - self.seq_len - 1, size=rows.size)
                seq[rows] = tokens[starts[:, None] + np.arange(self.seq_len + 1)]
        ones = np.ones(seq.shape, dtype=np.float32)
        return make_batch(seq, ones, ones.astype(bool))

    def validation_windows(self, corpus: str, max_windows: int | None = 256) -> np.ndarray:
        """(W, T+1) fixed windows of one corpus's validation split."""
        return validation_windows(self.corpora[corpus].validation.tokens, self.seq_len, max_windows)

    def samples(self, n: int, seed: int | np.random.Generator) -> list[dict]:
        b = self.batch(n, seed)
        return [
            {
                "input": self.tokenizer.decode(b["tokens"][i].numpy()),
                "target": self.tokenizer.decode(b["targets"][i].numpy()),
            }
            for i in range(n)
        ]
