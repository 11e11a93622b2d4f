"""Multi-needle retrieval accuracy as a grid: context length x number of needles x depth bin of the asked needle.

    needle_grid(model, context_lens=(256,), n_needles=(1, 2, 4), depth_bins=4, n=100)
    -> {"ctx256/k2/depth0-25/exact": .., "ctx256/k2/exact": .., ..., "exact": .., "first_token": ..,
        "wrong_needle": ..}

The answer is decoded greedily (as many tokens as the true value has): `exact` = the decoded value is the asked
one, `first_token` = its first token is right, `wrong_needle` = it is the value of another needle in the sample.
A cell whose needles and question alone fill the context (e.g. 4 two-word-key needles in 256 bytes) is skipped with
a warning: it has no haystack to search, so it measures nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from mta_ablate.evaluate.common import EVAL_SEED, evaluating

log = logging.getLogger(__name__)


def greedy_answers(model: nn.Module, items: list[dict], batch_size: int = 32) -> list[list[int]]:
    """For items whose sequence ends with an answer of `answer_len` tokens, decode that many tokens greedily
    from the prompt before it. Items are grouped by answer length so every forward pass is one tensor."""
    out: list[list[int]] = [[] for _ in items]
    groups: dict[int, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it["answer_len"]].append(i)
    with evaluating(model) as device:
        for a, idx in groups.items():
            for s in range(0, len(idx), batch_size):
                rows = idx[s : s + batch_size]
                cur = torch.from_numpy(np.stack([items[r]["seq"][:-a] for r in rows])).to(device)  # (b, P)
                for _ in range(a):
                    nxt = model(cur)[:, -1].argmax(-1, keepdim=True)  # (b, 1)
                    cur = torch.cat([cur, nxt], 1)
                for r, row in zip(rows, cur[:, -a:].cpu().tolist(), strict=True):
                    out[r] = row
    return out


def _bin_label(lo: float, hi: float) -> str:
    return f"depth{round(lo * 100)}-{round(hi * 100)}"


def needle_grid(
    model: nn.Module,
    context_lens: tuple[int, ...] = (256,),
    n_needles: tuple[int, ...] = (1, 2, 4),
    depth_bins: int = 4,
    n: int = 100,
    seed: int = EVAL_SEED,
    batch_size: int = 32,
    **params,
) -> dict[str, float]:
    """Needle accuracy per (context length, needles, depth bin), per (context, needles), and overall.
    `params` go to every NeedleConfig (key_words, value_digits, haystack, tokenizer, ...)."""
    from mta_ablate.data.tasks import build_task
    from mta_ablate.data.tasks.needle import NeedlesDoNotFit

    edges = np.linspace(0.0, 1.0, depth_bins + 1)
    out: dict[str, float] = {}
    overall: dict[str, list[float]] = defaultdict(list)
    for ctx in context_lens:
        for k in n_needles:
            try:
                task = build_task("needle", context_len=ctx, n_needles=k, **params)
            except NeedlesDoNotFit as e:
                log.warning("needle grid: skipping ctx%d/k%d: %s", ctx, k, e)
                continue
            items = task.generate(n, seed)
            decoded = greedy_answers(model, items, batch_size)
            cells: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for it, got in zip(items, decoded, strict=True):
                values = it["value_tokens"]
                score = {
                    "exact": float(got == values[0]),
                    "first_token": float(got[:1] == values[0][:1]),
                    "wrong_needle": float(any(got == v for v in values[1:])),
                }
                b = min(int(np.searchsorted(edges, it["depths"][0], side="right")) - 1, depth_bins - 1)
                for name, value in score.items():
                    cells[_bin_label(edges[b], edges[b + 1])][name].append(value)
                    cells["all"][name].append(value)
                    overall[name].append(value)
            for cell, metrics in cells.items():
                prefix = f"ctx{ctx}/k{k}" if cell == "all" else f"ctx{ctx}/k{k}/{cell}"
                for name, values in metrics.items():
                    if cell == "all" or name == "exact":
                        out[f"{prefix}/{name}"] = float(np.mean(values))
    for name, values in overall.items():
        out[name] = float(np.mean(values))
    return out
