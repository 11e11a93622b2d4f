"""Perplexity and bits-per-byte over fixed validation windows (the same windows for every model).

    corpus_perplexity(model, ["code", "books"], seq_len=256)
    -> {"code/ppl": .., "code/bpb": .., "code/nll": .., "code/tokens": .., "books/ppl": .., ..., "avg/ppl": ..}

ppl = exp(total NLL / target tokens), from `lm_loss`, so it matches the training loss; bpb = total NLL / ln 2 /
UTF-8 bytes of the target tokens (EOS tokens count in the NLL and as 0 bytes). "avg/ppl" is the unweighted mean
of the corpus perplexities, as the paper's "Avg".
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from mta_ablate.evaluate.common import evaluating
from mta_ablate.model import lm_loss


def window_perplexity(
    model: nn.Module, windows: np.ndarray, token_bytes: np.ndarray, batch_size: int = 16
) -> dict[str, float]:
    """windows (W, T+1) token ids -> {nll (nats/token), ppl, bpb, tokens, bytes}."""
    total_nll, total_tokens = 0.0, 0
    with evaluating(model) as device:
        for i in range(0, len(windows), batch_size):
            chunk = torch.from_numpy(np.asarray(windows[i : i + batch_size], dtype=np.int64)).to(device)
            targets = chunk[:, 1:]
            loss = lm_loss(model(chunk[:, :-1]), targets)
            total_nll += float(loss) * targets.numel()
            total_tokens += targets.numel()
    n_bytes = int(np.asarray(token_bytes)[np.asarray(windows)[:, 1:]].sum())
    nll = total_nll / max(total_tokens, 1)
    return {
        "nll": nll,
        "ppl": math.exp(nll),
        "bpb": total_nll / math.log(2) / max(n_bytes, 1),
        "tokens": float(total_tokens),
        "bytes": float(n_bytes),
    }


def corpus_perplexity(
    model: nn.Module,
    corpora: list[str] | tuple[str, ...],
    seq_len: int,
    tokenizer: str = "byte",
    max_windows: int = 64,
    batch_size: int = 16,
    tokenizer_corpora: tuple[str, ...] | None = None,
) -> dict[str, float]:
    """Perplexity and bits-per-byte per corpus over `max_windows` fixed validation windows of `seq_len`."""
    from mta_ablate.data.corpora import load_corpus
    from mta_ablate.data.tasks.lm import validation_windows

    out: dict[str, float] = {}
    for name in corpora:
        corpus = load_corpus(name, tokenizer, tokenizer_corpora or tuple(corpora))
        windows = validation_windows(corpus.validation.tokens, seq_len, max_windows)
        for key, value in window_perplexity(model, windows, corpus.tokenizer.token_bytes, batch_size).items():
            out[f"{name}/{key}"] = value
    if corpora:
        out["avg/ppl"] = float(np.mean([out[f"{n}/ppl"] for n in corpora]))
        out["avg/bpb"] = float(np.mean([out[f"{n}/bpb"] for n in corpora]))
    return out
