"""Metric semantics checked with oracle models (real nn.Modules that compute the answer from the input)."""

import re

import pytest
import torch
from torch import nn

from mta_ablate.attention import AttentionSpec
from mta_ablate.data import build_task
from mta_ablate.evaluate import babilong_accuracy, needle_grid, toy_error
from mta_ablate.model import ModelConfig, TransformerLM


class FindBlockOracle(nn.Module):
    """Predicts the target block's letters after the query; optionally gets the first letter wrong."""

    def __init__(self, task, wrong_first: bool = False):
        super().__init__()
        self.task, self.wrong_first = task, wrong_first

    def forward(self, tokens):
        b, t = tokens.shape
        logits = torch.zeros(b, t, self.task.vocab_size)
        c = self.task.config
        cut = 1 + c.n_blocks * c.block_size + c.n_blocks - 1  # position of "#"
        for i, row in enumerate(tokens.tolist()):
            blocks = [
                row[1 + j * (c.block_size + 1) : 1 + j * (c.block_size + 1) + c.block_size] for j in range(c.n_blocks)
            ]
            query = set(row[cut + 1 : cut + 1 + c.query_size])
            block = next(bl for bl in blocks if query <= set(bl))
            for k, letter in enumerate(block):
                if self.wrong_first and k == 0:
                    letter = (letter + 1) % c.alphabet
                logits[i, cut + c.query_size + k, letter] = 10.0
        return logits


def test_toy_error_is_zero_for_an_oracle_and_one_when_the_first_letter_is_wrong():
    task = build_task("find_block")
    assert toy_error(FindBlockOracle(task), task, n=64)["error"] == 0.0
    out = toy_error(FindBlockOracle(task, wrong_first=True), task, n=64)
    assert out["error"] == 1.0 and out["error_pos0"] == 1.0 and out["error_pos1"] == 0.0
    assert out["token_error"] == pytest.approx(0.25)


class NeedleOracle(nn.Module):
    """Reads the byte prompt and continues with the asked value (or another needle's value)."""

    def __init__(self, lie: bool = False):
        super().__init__()
        self.lie = lie

    def forward(self, tokens):
        b, t = tokens.shape
        logits = torch.zeros(b, t, 259)
        for i, row in enumerate(tokens.tolist()):
            text = bytes(x for x in row if x < 256).decode("utf-8", "replace")
            head, _, tail = text.rpartition(" What is the magic number of ")
            key = tail.split("?")[0]
            values = dict(re.findall(r"The magic number of ([\w ]+?) is (\d+)\.", head))
            answer = values[key] if not self.lie else next(v for k, v in values.items() if k != key)
            done = tail.rsplit(" is ", 1)[-1]
            logits[i, -1, ord(answer[len(done)])] = 10.0
        return logits


def test_needle_grid_scores_exact_and_wrong_needle_answers():
    params = {"context_lens": (256,), "n_needles": (2,), "depth_bins": 2, "n": 12, "haystack": "code"}
    right = needle_grid(NeedleOracle(), **params)
    assert right["exact"] == 1.0 and right["first_token"] == 1.0 and right["wrong_needle"] == 0.0
    assert right["ctx256/k2/exact"] == 1.0
    assert any(k.startswith("ctx256/k2/depth") for k in right)
    wrong = needle_grid(NeedleOracle(lie=True), **params)
    assert wrong["exact"] == 0.0 and wrong["wrong_needle"] == 1.0


def test_needle_grid_skips_a_cell_whose_needles_fill_the_context():
    params = {"context_lens": (256, 512), "n_needles": (2, 4), "n": 4, "haystack": "code", "key_words": 2}
    out = needle_grid(NeedleOracle(), **params)
    assert "ctx256/k4/exact" not in out
    assert out["ctx256/k2/exact"] == out["ctx512/k2/exact"] == out["ctx512/k4/exact"] == out["exact"] == 1.0


def test_babilong_accuracy_reports_each_task_and_length():
    torch.manual_seed(0)
    model = TransformerLM(
        ModelConfig(vocab_size=259, dim=32, n_layers=1, n_heads=2, ffn_hidden=64, max_seq_len=512,
                    attention=AttentionSpec())
    )  # fmt: skip
    out = babilong_accuracy(model, qa=(1, 2), context_lens=(512,), n=8, haystack="code")
    assert set(out) == {"qa1/len512/exact", "qa1/len512/first_token", "qa2/len512/exact", "qa2/len512/first_token",
                        "exact"}  # fmt: skip
    assert all(0.0 <= v <= 1.0 for v in out.values())
