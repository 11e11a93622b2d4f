"""`find_block`: the MTA paper's motivating toy task (its section 3).

A sample is K blocks of N distinct letters joined by ".", then "#" and a query of L distinct letters taken
from exactly one block (the target); the model must output that block (`all`), its first letter or its last:

    <bos> hjnv.qfjg. ... .abcd#ca abcd <eos>        V=26, N=4, L=2, K=10: 58 tokens, seq_len T = 57
    the paper: N=5, L=2, K=52, `all`: 321 tokens (T = 320)

Token ids: letters 0..V-1, "." = V, "#" = V+1, <bos> = V+2, <eos> = V+3; vocab_size = V+4. Loss on the target
letters and <eos> (as the reference); the error (answer_mask) on the target letters only. Every row is one
sample, so nothing spans two samples.
"""

from __future__ import annotations

import numpy as np
import torch

from mta_ablate.config.tasks import LETTERS, FindBlockConfig
from mta_ablate.data.tasks.base import as_generator, check_int, make_batch


class FindBlockTask:
    """Generator of find_block batches. `seq_len` = T, `vocab_size` = V + 4."""

    name = "find_block"

    def __init__(self, config: FindBlockConfig):
        self.config = config
        v = config.alphabet
        self.dot, self.hash, self.bos_id, self.eos_id = v, v + 1, v + 2, v + 3
        self.n_target = config.block_size if config.target == "all" else 1
        self.vocab_size, self.seq_len = config.vocab_size, config.seq_len  # derived by the config
        self.sample_len = self.seq_len + 1

    def _generate(self, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Vectorised draw of n samples: sequences (n, T+1) and the parts they were made of."""
        c = self.config
        v, k, bs, q = c.alphabet, c.n_blocks, c.block_size, c.query_size
        target = rng.random((n, v)).argsort(1)[:, :bs]  # (n, N) distinct letters
        query = np.take_along_axis(target, rng.random((n, bs)).argsort(1)[:, :q], 1)  # (n, L)
        distract = rng.random((n, k - 1, v)).argsort(2)[..., :bs]  # (n, K-1, N)
        for _ in range(1000):  # rejection: no distractor may contain every query letter
            bad = (distract[..., :, None] == query[:, None, None, :]).any(2).all(-1)  # (n, K-1)
            if not bad.any():
                break
            rows, cols = np.nonzero(bad)
            distract[rows, cols] = rng.random((rows.size, v)).argsort(1)[:, :bs]
        else:  # pragma: no cover - excluded by the collision check in the config
            raise RuntimeError("find_block: rejection sampling did not converge")
        blocks = np.concatenate([distract, target[:, None]], 1)  # (n, K, N), target last
        order = rng.random((n, k)).argsort(1)
        blocks = np.take_along_axis(blocks, order[..., None], 1)
        target_index = np.argmax(order == k - 1, axis=1)  # (n,)
        with_dots = np.concatenate([blocks, np.full((n, k, 1), self.dot)], 2).reshape(n, -1)[:, :-1]
        answer = {"all": target, "first": target[:, :1], "last": target[:, -1:]}[c.target]
        seq = np.concatenate(
            [
                np.full((n, 1), self.bos_id),
                with_dots,
                np.full((n, 1), self.hash),
                query,
                answer,
                np.full((n, 1), self.eos_id),
            ],
            1,
        ).astype(np.int64)
        return {"seq": seq, "blocks": blocks, "target_index": target_index, "query": query, "answer": answer}

    def batch(self, n: int, seed: int | np.random.Generator) -> dict[str, torch.Tensor]:
        """n samples -> {tokens, targets, loss_weight, loss_mask, answer_mask}, each (n, T)."""
        check_int("batch_size", n, 1)
        seq = self._generate(n, as_generator(seed))["seq"]
        weight = np.zeros(seq.shape, dtype=np.float32)
        weight[:, -self.n_target - 1 :] = 1.0  # target letters + <eos>
        answer = np.zeros(seq.shape, dtype=bool)
        answer[:, -self.n_target - 1 : -1] = True
        return make_batch(seq, weight, answer)

    def render(self, ids) -> str:
        symbols = {self.dot: ".", self.hash: "#", self.bos_id: "", self.eos_id: ""}
        return "".join(symbols.get(int(i), LETTERS[int(i)] if int(i) < self.config.alphabet else "?") for i in ids)

    def samples(self, n: int, seed: int | np.random.Generator) -> list[dict]:
        """n samples as JSON-ready dicts: input and target text plus the blocks, query and target index."""
        g = self._generate(n, as_generator(seed))
        cut = self.sample_len - self.n_target - 1
        return [
            {
                "input": self.render(g["seq"][i, :cut]),
                "target": self.render(g["answer"][i]),
                "query": self.render(g["query"][i]),
                "target_block": int(g["target_index"][i]),
                "blocks": [self.render(b) for b in g["blocks"][i]],
                "tokens": g["seq"][i].tolist(),
            }
            for i in range(n)
        ]
