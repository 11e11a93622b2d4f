"""`babilong`: bAbI QA1-QA3 facts scattered, in order, between sentences of real book text (BabiLong-style).

    <pad>... <bos> ...book sentence. Mary went to the kitchen. ...book sentence... Question: Where is Mary?
    Answer: kitchen

Samples start mid-text (topped up with the text before the first sentence), left-padded when
needed, to exactly `context_len + 1` tokens; the one-word answer is the scored span (loss
weight 1); the story weighs `lm_weight`; padding weighs 0. The background is the `books` validation split.
"""

from __future__ import annotations

import re

import numpy as np

from mta_ablate.config.tasks import BabiLongConfig
from mta_ablate.data.tasks import babi
from mta_ablate.data.tasks.base import AnswerAtEndTask
from mta_ablate.errors import ConfigError

SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])|\n\s*\n")  # sentence ends and paragraph breaks


class BabiLongTask(AnswerAtEndTask):
    META = ("question", "answer", "facts", "pad")

    name = "babilong"

    def __init__(self, config: BabiLongConfig):
        self._load_haystack(config)
        fact = len(self.tokenizer.encode(" Sandra journeyed to the bathroom."))
        prompt = len(self.tokenizer.encode(" Question: Where was the football before the bathroom? Answer: bathroom"))
        most = max(config.facts(q) for q in config.tasks)
        if most * fact + prompt + 1 > config.context_len:
            raise ConfigError(
                f"task.context_len={config.context_len}: {most} facts and the question need up to "
                f"{most * fact + prompt + 1} tokens"
            )

    def _background(self, rng: np.random.Generator, budget: int) -> tuple[int, list[str]]:
        """(start, sentences): whole consecutive sentences from a random place in the haystack (about `budget`
        tokens or more) and the token offset they were read from."""
        span = min(len(self.haystack), 3 * budget + 512)
        start = int(rng.integers(0, len(self.haystack) - span + 1))
        text = self.tokenizer.decode(self.haystack[start : start + span])
        sentences = [" ".join(s.split()) for s in SENTENCE_SPLIT.split(text)[1:-1]]
        return start, [s for s in sentences if s]

    def _one(self, rng: np.random.Generator) -> dict:
        c, tok = self.config, self.tokenizer
        qa = c.tasks[int(rng.integers(len(c.tasks)))] if len(c.tasks) > 1 else c.tasks[0]
        facts, question, answer = babi.GENERATORS[qa](rng, c.facts(qa))
        prompt = tok.encode(f" Question: {question} Answer: ")
        answer_ids = tok.encode(answer)
        budget = c.context_len - len(prompt) - len(answer_ids)  # + 1 (bos) - 1 (shift)
        if len(tok.encode(" ".join(facts))) > budget:
            raise ConfigError(f"task.context_len={c.context_len}: too short for {len(facts)} facts")
        start, background = self._background(rng, budget)
        room = budget - len(tok.encode(" ".join(facts))) - 1
        lengths = np.cumsum([len(tok.encode(" " + b)) for b in background])
        n_bg = int(np.searchsorted(lengths, room, side="right"))  # whole sentences that fit
        while True:
            slots = np.sort(rng.choice(n_bg + 1, size=len(facts), replace=True))
            parts, j = [], 0
            for i in range(n_bg + 1):
                while j < len(facts) and slots[j] == i:
                    parts.append(facts[j])
                    j += 1
                if i < n_bg:
                    parts.append(background[i])
            story = tok.encode(" " + " ".join(parts))
            if len(story) <= budget or n_bg == 0:
                break
            n_bg -= 1
        story = story[-budget:] if len(story) > budget else story
        fill = min(budget - len(story), start)  # top up with the text just before, so padding is rare
        story = np.concatenate([np.asarray(self.haystack[start - fill : start], dtype=np.int64), story])
        pad = budget - len(story)
        seq = np.concatenate([np.full(pad, tok.pad_id), [tok.bos_id], story, prompt, answer_ids]).astype(np.int64)
        assert len(seq) == c.context_len + 1
        return {
            "seq": seq,
            "pad": pad,
            "answer_len": len(answer_ids),
            "facts": facts,
            "question": question,
            "answer": answer,
        }
