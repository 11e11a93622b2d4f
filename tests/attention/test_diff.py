"""Differential attention (the DIFF Transformer) against a slow transcription of its formula."""

import math

import pytest
import torch

from mta_ablate.attention import AttentionSpec, preset
from mta_ablate.attention.module import MultiTokenAttention, apply_rope, rope_tables
from mta_ablate.errors import ConfigError
from mta_ablate.model import ModelConfig, TransformerLM


def _layer(layer_id: int = 2, dim: int = 32, heads: int = 4) -> MultiTokenAttention:
    spec = preset("diff")
    torch.manual_seed(0)
    layer = MultiTokenAttention(dim, heads, spec, spec.resolve(heads, 4)[layer_id], init_std=0.2)
    with torch.no_grad():  # lambdas and norm weight away from their initial values
        layer.mta_diff_lambda.copy_(torch.randn(4, dim // heads) * 0.5)
        layer.mta_norm_weight.copy_(1 + 0.3 * torch.randn(layer.out_dim))
    return layer.double()


def slow_diff(layer: MultiTokenAttention, x: torch.Tensor, layer_id: int) -> torch.Tensor:
    """The DIFF Transformer's formula with explicit loops over differential heads and masked softmax maps."""
    b, t, e = x.shape
    h, d = layer.n_heads, layer.head_dim
    cos, sin = (c.double() for c in rope_tables(d, t, 10_000.0))
    q = apply_rope((x @ layer.wq.weight.T).view(b, t, h, d).transpose(1, 2), cos, sin)
    k = apply_rope((x @ layer.wk.weight.T).view(b, t, h, d).transpose(1, 2), cos, sin)
    v = (x @ layer.wv.weight.T).view(b, t, h, d)
    lq1, lk1, lq2, lk2 = layer.mta_diff_lambda
    lam_init = 0.8 - 0.6 * math.exp(-0.3 * layer_id)
    lam = math.exp(float(lq1 @ lk1)) - math.exp(float(lq2 @ lk2)) + lam_init
    future = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
    heads = []
    for i in range(h // 2):
        maps = []
        for j in (2 * i, 2 * i + 1):
            logits = (q[:, j] @ k[:, j].transpose(-1, -2)) / math.sqrt(d)
            maps.append(torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1))
        value = torch.cat([v[:, :, 2 * i], v[:, :, 2 * i + 1]], dim=-1)  # (B, T, 2D)
        out = (maps[0] - lam * maps[1]) @ value
        rms = out.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt()
        heads.append(out / rms * layer.mta_norm_weight * (1 - lam_init))
    return torch.cat(heads, dim=-1) @ layer.wo.weight.T


def test_matches_the_slow_transcription():
    layer = _layer(layer_id=2)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    cos, sin = (c.double() for c in rope_tables(8, 11, 10_000.0))
    torch.testing.assert_close(layer(x, cos, sin), slow_diff(layer, x, 2), rtol=1e-9, atol=1e-9)


def test_is_causal():
    layer = _layer()
    x = torch.randn(1, 12, 32, dtype=torch.float64)
    cos, sin = (c.double() for c in rope_tables(8, 12, 10_000.0))
    base = layer(x, cos, sin)
    x2 = x.clone()
    x2[:, 7:] = torch.randn_like(x2[:, 7:])
    assert torch.equal(layer(x2, cos, sin)[:, :7], base[:, :7])


def test_parameters_are_the_baselines_plus_lambdas_and_norm():
    """Half the heads with values twice as wide: the projections keep the baseline's shapes (paired draws too)."""
    shape = dict(vocab_size=50, dim=32, n_layers=3, n_heads=4, ffn_hidden=64, max_seq_len=16)
    base = TransformerLM(ModelConfig(attention=preset("baseline"), **shape), seed=1)
    diff = TransformerLM(ModelConfig(attention=preset("diff"), **shape), seed=1)
    d = 32 // 4
    extra = diff.count_params()["total"] - base.count_params()["total"]
    assert extra == 3 * (4 * d + 2 * d) == diff.count_params()["mta"]
    shared = {n: p for n, p in base.named_parameters()}
    for name, param in diff.named_parameters():
        if name in shared:
            assert torch.equal(param, shared[name]), name
    tokens = torch.randint(0, 50, (2, 16))
    diff(tokens).sum().backward()  # trains: every parameter gets a gradient
    assert all(p.grad is not None for p in diff.parameters())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(differential=True, qk_pre=(2, 3)), "cannot be combined with qk_pre"),
        (dict(differential=True, head_mix_pre="full"), "cannot be combined"),
        (dict(differential=True, dropout=0.1), "allowed: dropout=0"),
        (dict(differential="yes"), "expected true or false"),
    ],
)
def test_bad_differential_specs_name_what_is_wrong(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        AttentionSpec(**kwargs)


def test_an_odd_head_count_is_refused_when_resolved():
    with pytest.raises(ConfigError, match="needs an even n_heads"):
        preset("diff").resolve(3, 2)


def test_sdpa_path_equals_explicit_maps_in_fp32():
    layer = _layer().float()
    x = torch.randn(2, 9, 32)
    cos, sin = rope_tables(8, 9, 10_000.0)
    expected = slow_diff(layer.double(), x.double(), 2).float()
    layer.float()
    torch.testing.assert_close(layer(x, cos, sin), expected, rtol=1e-4, atol=1e-5)
