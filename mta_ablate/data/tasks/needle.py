"""`needle`: multi-needle retrieval in real haystack text (DIFF-Transformer / MTA-paper style).

    <bos> ...haystack... The magic number of Lisbon is 42. ...haystack... The magic number of Oslo is 17. ...
          What is the magic number of Oslo? The magic number of Oslo is 17
                                                                        ^^ answer (scored, loss weight 1)

k needles at controlled depths (fraction of the haystack, snapped to a sentence end or a word start, at most
`snap_window` tokens away), keys unique within a sample, values unique within a sample, one question at the end. With
`key_words=2` keys are two-word phrases and the other needles share one word with the asked key (distractors
where attending to one token is not enough). The haystack is a random window of a corpus split (default: the
`books` validation split, never trained on by `lm`). Every sample is exactly `context_len + 1` tokens.
"""

from __future__ import annotations

import numpy as np

from mta_ablate.config.tasks import ADJECTIVES, CITIES, NOUNS, NeedleConfig
from mta_ablate.data.tasks.base import AnswerAtEndTask
from mta_ablate.errors import ConfigError

SNAP_TOKENS = 64
MIN_SNAP_TOKENS = 16  # longer than almost every English word, so a needle never lands inside one


class NeedlesDoNotFit(ConfigError):
    """The needles, question and answer alone fill the context (an evaluation grid skips such a cell)."""


def snap_window(haystack_len: int) -> int:
    """Most tokens a needle moves from its requested depth: haystack / 16, within [MIN_SNAP_TOKENS, SNAP_TOKENS]."""
    return max(MIN_SNAP_TOKENS, min(SNAP_TOKENS, haystack_len // 16))


class NeedleTask(AnswerAtEndTask):
    META = ("query", "answer", "keys", "values", "depths", "needle_start")

    name = "needle"

    def __init__(self, config: NeedleConfig):
        self._load_haystack(config)
        self.sentence_end = np.zeros(self.vocab_size, dtype=bool)  # tokens after which a sentence may start
        self.space_start = np.zeros(self.vocab_size, dtype=bool)  # tokens that start a new word
        for i in np.nonzero(self.tokenizer.token_bytes)[0]:
            text = self.tokenizer.decode([i])
            self.sentence_end[i] = text.rstrip(" ")[-1:] in (".", "!", "?", "\n")
            self.space_start[i] = text[:1] in (" ", "\n")
        longest = self._needle_budget()
        if longest >= config.context_len:
            raise NeedlesDoNotFit(
                f"task.context_len={config.context_len}: {config.n_needles} needles and the question need up to"
                f" {longest} tokens"
            )
        if len(self.haystack) < config.context_len:
            raise ConfigError(f"task.haystack={config.haystack!r}: split too short for context_len")

    def _needle_budget(self) -> int:
        c = self.config
        keys = CITIES if c.key_words == 1 else [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
        key = max(keys, key=lambda k: len(self.tokenizer.encode(k)))
        value = "9" * c.value_digits
        needle = len(self.tokenizer.encode(f" The magic number of {key} is {value}."))
        q = len(self.tokenizer.encode(f" What is the magic number of {key}? The magic number of {key} is {value}"))
        return 1 + c.n_needles * needle + q

    def _keys(self, rng: np.random.Generator) -> list[str]:
        """n distinct keys; the first one is asked. Two-word keys share a word with the asked key."""
        k = self.config.n_needles
        if self.config.key_words == 1:
            return [CITIES[i] for i in rng.choice(len(CITIES), size=k, replace=False)]
        adj = rng.choice(len(ADJECTIVES), size=k, replace=False)
        noun = rng.choice(len(NOUNS), size=k, replace=False)
        keys = [f"{ADJECTIVES[adj[0]]} {NOUNS[noun[0]]}"]
        for i in range(1, k):  # alternate: share the adjective, then share the noun
            keys.append(f"{ADJECTIVES[adj[0]]} {NOUNS[noun[i]]}" if i % 2 else f"{ADJECTIVES[adj[i]]} {NOUNS[noun[0]]}")
        return keys

    def _one(self, rng: np.random.Generator) -> dict:
        c, tok = self.config, self.tokenizer
        keys = self._keys(rng)
        lo = 10 ** (c.value_digits - 1) if c.value_digits > 1 else 0
        values = [str(v) for v in lo + rng.choice(10**c.value_digits - lo, size=c.n_needles, replace=False)]
        needles = [tok.encode(f" The magic number of {k} is {v}.") for k, v in zip(keys, values, strict=True)]
        question = tok.encode(f" What is the magic number of {keys[0]}? The magic number of {keys[0]} is ")
        answer = tok.encode(values[0])
        h = c.context_len + 1 - 1 - sum(map(len, needles)) - len(question) - len(answer)
        start = int(rng.integers(0, len(self.haystack) - h + 1))
        hay = np.asarray(self.haystack[start : start + h], dtype=np.int64)
        depths = rng.random(c.n_needles) if c.depths is None else np.asarray(c.depths, dtype=np.float64)
        order = rng.permutation(c.n_needles)  # which needle sits at which depth: asked one is not always first
        cuts = [self._snap(hay, int(round(d * h))) for d in depths]
        placed = sorted(zip(cuts, order, strict=True))
        cut_of = {int(i): pos for pos, i in placed}
        parts, positions, prev = [np.array([tok.bos_id])], {}, 0
        length = 1
        for pos, i in placed:
            parts.append(hay[prev:pos])
            length += pos - prev
            positions[int(i)] = length
            parts.append(needles[i])
            length += len(needles[i])
            prev = pos
        parts += [hay[prev:], question, answer]
        seq = np.concatenate(parts).astype(np.int64)
        assert len(seq) == c.context_len + 1
        return {
            "seq": seq,
            "keys": keys,
            "values": values,
            "query": keys[0],
            "answer": values[0],
            "answer_len": len(answer),
            "needle_start": [positions[i] for i in range(c.n_needles)],
            "depths": [cut_of[i] / max(h, 1) for i in range(c.n_needles)],
            "value_tokens": [tok.encode(v).tolist() for v in values],
        }

    def _snap(self, hay: np.ndarray, pos: int) -> int:
        """Move an insertion point back to just after a sentence end, else to the start of a word (back, or forward
        when no word starts behind it), else leave it; never by more than `snap_window(len(hay))` tokens."""
        window = snap_window(len(hay))
        for p in range(pos, max(0, pos - window) - 1, -1):
            if p == 0 or self.sentence_end[hay[p - 1]]:
                return p
        for p in [*range(pos, max(0, pos - window) - 1, -1), *range(pos + 1, min(len(hay), pos + window) + 1)]:
            if p == len(hay) or self.space_start[hay[p]]:
                return p
        return pos
