import math

import numpy as np
import torch
from torch import nn

from mta_ablate.attention import AttentionSpec
from mta_ablate.data import build_task
from mta_ablate.evaluate import corpus_perplexity
from mta_ablate.model import ModelConfig, TransformerLM, lm_loss


class Uniform(nn.Module):
    """A model whose next-token distribution is uniform over the vocabulary."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, tokens):
        return torch.zeros(*tokens.shape, self.vocab_size)


def test_uniform_model_has_perplexity_equal_to_the_vocabulary_size():
    out = corpus_perplexity(Uniform(259), ["code"], seq_len=64, max_windows=8)
    assert math.isclose(out["code/ppl"], 259.0, rel_tol=1e-5)
    assert math.isclose(out["code/bpb"], math.log2(259) * out["code/tokens"] / out["code/bytes"], rel_tol=1e-5)
    assert out["code/tokens"] == 8 * 64 and out["avg/ppl"] == out["code/ppl"]


def test_a_briefly_trained_model_beats_uniform_on_fixed_windows():
    torch.manual_seed(0)
    task = build_task("lm", corpora="code", seq_len=64)
    model = TransformerLM(
        ModelConfig(vocab_size=task.vocab_size, dim=32, n_layers=1, n_heads=2, ffn_hidden=64, max_seq_len=64,
                    attention=AttentionSpec())
    )  # fmt: skip
    before = corpus_perplexity(model, ["code"], seq_len=64, max_windows=8)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    for _ in range(40):
        batch = task.batch(16, rng)
        loss = lm_loss(model(batch["tokens"]), batch["targets"], batch["loss_weight"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = corpus_perplexity(model, ["code"], seq_len=64, max_windows=8)
    assert after["code/ppl"] < 0.5 * task.vocab_size and after["code/ppl"] < before["code/ppl"]
    assert after["code/bpb"] < 8.0
    assert model.training  # evaluation restores the training flag
    again = corpus_perplexity(model, ["code"], seq_len=64, max_windows=8)
    assert again == after  # same windows, same numbers
