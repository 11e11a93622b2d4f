"""The language model: causality, identity init, parameter counts, loss."""

import random

import pytest
import torch

from mta_ablate.attention import PRESETS, AttentionSpec, preset
from mta_ablate.model import ModelConfig, TransformerLM, lm_loss, model_preset, paper_mta_overhead

VOCAB = 13


def build(spec, n_layers=4, n_heads=4, dim=32, seed=0):
    torch.manual_seed(seed)
    return TransformerLM(
        ModelConfig(
            vocab_size=VOCAB, dim=dim, n_layers=n_layers, n_heads=n_heads, ffn_hidden=48, max_seq_len=32, attention=spec
        )
    )


def randomize_(model, seed):
    """Every parameter random (kernels and head mixes far from identity, gates and norms too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


def random_spec(rng):
    pad = rng.choice(["both", "left", "right"])

    def kernel():
        c_q, c_k = rng.randint(1, 4), rng.randint(1, 6)
        return None if rng.random() < 0.3 else (c_q, c_k + (pad == "both" and c_k % 2 == 0))

    return AttentionSpec(
        qk_pre=kernel(),
        qk_post=kernel(),
        pad_key=pad,
        head_mix_pre=rng.choice([None, 1, 2, "full"]),
        head_mix_post=rng.choice([None, 2, "full"]),
        group_norm=rng.choice(["off", "plain", "depth_scaled", "gated_scalar", "gated_vector"]),
        layers=rng.choice(["all", "every:2", (0, 3)]),
        head_mix_layers=rng.choice(["all", "every:2:1"]),
    )


SPECS = [preset(name) for name in PRESETS] + [random_spec(random.Random(s)) for s in range(12)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: repr(s)[14:80])
def test_causal_changing_future_tokens_leaves_past_logits_unchanged(spec):
    model = build(spec)
    randomize_(model, seed=1)
    model.eval()
    tokens = torch.randint(0, VOCAB, (2, 20))
    for t in (1, 7, 13):
        changed = tokens.clone()
        changed[:, t:] = torch.randint(0, VOCAB, changed[:, t:].shape)
        with torch.no_grad():
            before, after = model(tokens), model(changed)
        assert torch.equal(before[:, :t], after[:, :t]), f"position < {t} saw a future token"


@pytest.mark.parametrize("pad_key", ["both", "left", "right"])
@pytest.mark.parametrize("kernel", [(1, 1), (2, 3), (3, 5), (4, 9)])
def test_identity_init_equals_the_baseline_with_the_same_weights(pad_key, kernel):
    spec = AttentionSpec(qk_pre=kernel, qk_post=kernel, pad_key=pad_key, head_mix_pre="full", head_mix_post=2)
    mta = build(spec, seed=3)
    base = build(AttentionSpec(), seed=4)
    missing, unexpected = mta.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and all("mta_" in name for name in missing)
    tokens = torch.randint(0, VOCAB, (3, 25))
    with torch.no_grad():
        torch.testing.assert_close(mta(tokens), base(tokens), rtol=1e-5, atol=1e-5)


def test_parameter_counts_match_the_paper_880m_table():
    """The paper's Table 8: baseline 876,553,728; MTA 876,583,320; talking heads 876,566,016."""
    shape = model_preset("880m")
    counts = {}
    with torch.device("meta"):
        for name in ("baseline", "mta_paper", "talking_heads"):
            counts[name] = TransformerLM(
                ModelConfig(vocab_size=128_256, attention=preset(name), **shape)
            ).count_params()
    assert counts["baseline"] == {"total": 876_553_728, "mta": 0, "non_mta": 876_553_728}
    assert counts["mta_paper"]["total"] == 876_583_320
    assert counts["mta_paper"]["mta"] == paper_mta_overhead(24, 16, 96, c_q=6, c_k=11, c_h=16) == 29_592
    assert counts["talking_heads"]["total"] == 876_566_016


def test_mta_overhead_formula_on_a_small_model():
    model = build(preset("mta_paper"), n_layers=8, n_heads=4, dim=32)  # KQ conv in layers 2 and 6 = L/4
    assert model.count_params()["mta"] == paper_mta_overhead(8, 4, 8, c_q=6, c_k=11, c_h=4)


def test_vocab_size_comes_from_the_config_and_loss_masks():
    model = build(AttentionSpec())
    logits = model(torch.randint(0, VOCAB, (2, 6)))
    assert logits.shape == (2, 6, VOCAB)
    targets = torch.randint(0, VOCAB, (2, 6))
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[:, -2:] = True
    masked = lm_loss(logits, targets, mask)
    expected = torch.nn.functional.cross_entropy(logits[:, -2:].reshape(-1, VOCAB), targets[:, -2:].reshape(-1))
    torch.testing.assert_close(masked, expected)


def test_rejects_sequences_longer_than_max_seq_len():
    with pytest.raises(ValueError, match="max_seq_len=32"):
        build(AttentionSpec())(torch.zeros(1, 33, dtype=torch.long))


def test_same_seed_same_init():
    a, b = build(preset("mta_paper"), seed=7), build(preset("mta_paper"), seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
