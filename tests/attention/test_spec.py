"""`AttentionSpec`: every axis combination builds and trains one step; every invalid spec says what is wrong."""

import itertools

import pytest
import torch

from mta_ablate.attention import PRESETS, AttentionSpec, depth_scale, preset
from mta_ablate.config import ConfigError
from mta_ablate.model import ModelConfig, TransformerLM


def tiny_model(spec, n_heads=4, n_layers=2, dim=32):
    return TransformerLM(
        ModelConfig(
            vocab_size=11, dim=dim, n_layers=n_layers, n_heads=n_heads, ffn_hidden=32, max_seq_len=16, attention=spec
        )
    )


AXES = dict(
    qk_pre=[None, (2, 3)],
    qk_post=[None, (1, 3)],
    pad_key=["both", "left", "right"],
    head_mix_pre=[None, 2, "full"],
    head_mix_post=[None, 4],
    group_norm=["off", "plain", "depth_scaled", "gated_scalar", "gated_vector"],
    init=["identity", "zero", "const", "uniform", "diagonal"],
    layers=["all", "none", (1,), "every:2", "every:2:1"],
)


def all_combinations():
    """Every pairwise combination of axis levels (a covering array), plus each level alone."""
    names = list(AXES)
    seen = set()
    for a, b in itertools.combinations(names, 2):
        for la, lb in itertools.product(AXES[a], AXES[b]):
            spec = {a: la, b: lb}
            key = tuple(sorted((k, str(v)) for k, v in spec.items()))
            if key not in seen:
                seen.add(key)
                yield spec


@pytest.mark.parametrize("fields", list(all_combinations()), ids=str)
def test_every_combination_builds_runs_forward_and_backward(fields):
    model = tiny_model(AttentionSpec(**fields, dropout=0.1))
    tokens = torch.randint(0, 11, (2, 9))
    logits = model(tokens)
    assert logits.shape == (2, 9, 11)
    assert torch.isfinite(logits).all()
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_build_a_model_that_runs_and_adds_parameters_only_as_variants(name):
    model = tiny_model(preset(name), n_layers=4)
    counts = model.count_params()
    baseline = tiny_model(preset("baseline"), n_layers=4).count_params()
    assert counts["non_mta"] == baseline["total"]  # a variant adds parameters, it never changes the baseline's
    assert (counts["mta"] == 0) == (preset(name) == AttentionSpec())  # only the baseline adds none
    logits = model(torch.randint(0, 11, (2, 9)))
    assert logits.shape == (2, 9, 11) and torch.isfinite(logits).all()


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(qk_pre=(4, 10)), ["qk_pre", "(4, 10)", "odd", "(4, 11)"]),
        (dict(qk_post=(0, 3)), ["qk_post", ">= 1"]),
        (dict(qk_pre=(2.0, 3)), ["qk_pre", "two integers"]),
        (dict(qk_pre=(1, 2, 3)), ["qk_pre", "two integers"]),
        (dict(pad_key="middle"), ["pad_key", "'middle'", "'both'", "'left'", "'right'"]),
        (dict(group_norm="layer"), ["group_norm", "'gated_scalar'"]),
        (dict(init="normal"), ["init", "'identity'", "'diagonal'"]),
        (dict(post_init="ones"), ["post_init", "'identity'"]),
        (dict(head_mix_pre=0), ["head_mix_pre", "divides n_heads"]),
        (dict(head_mix_post="some"), ["head_mix_post", "'full'"]),
        (dict(layers="every:0"), ["layers", "every:K"]),
        (dict(layers="odd"), ["layers", "'all'"]),
        (dict(head_mix_layers=(-1,)), ["head_mix_layers", ">= 0"]),
        (dict(dropout=1.5), ["dropout", "[0, 1)"]),
        (dict(dropout="high"), ["dropout", "float"]),
    ],
)
def test_invalid_specs_name_field_value_and_what_is_allowed(fields, words):
    with pytest.raises(ConfigError) as err:
        AttentionSpec(**fields)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(head_mix_pre=3), ["head_mix_pre=3", "n_heads=4", "[1, 2, 4]"]),
        (dict(head_mix_post=8), ["head_mix_post=8", "n_heads=4"]),
        (dict(qk_pre=(2, 3), layers=(0, 5)), ["layers", "5", "0..1"]),
        (dict(head_mix_pre=2, head_mix_layers="every:2:3"), ["head_mix_layers", "offset 3"]),
    ],
)
def test_model_dependent_checks_run_when_the_model_is_built(fields, words):
    spec = AttentionSpec(**fields)  # valid on its own
    with pytest.raises(ConfigError) as err:
        tiny_model(spec)
    for word in words:
        assert word in str(err.value)


def test_unknown_field_and_unknown_preset():
    with pytest.raises(ConfigError, match="qk_prex.*allowed"):
        AttentionSpec.from_dict({"qk_prex": (2, 3)})
    with pytest.raises(ConfigError, match="mta_fancy.*baseline"):
        preset("mta_fancy")


def test_dict_round_trip_and_yaml_style_lists():
    spec = AttentionSpec.from_dict({"qk_pre": [6, 11], "layers": [1, 3], "head_mix_post": "full"})
    assert spec.qk_pre == (6, 11) and spec.layers == (1, 3)
    assert AttentionSpec.from_dict(spec.to_dict()) == spec


def test_layer_selection():
    plans = preset("mta_paper").resolve(n_heads=4, n_layers=12)
    assert [p.layer_id for p in plans if p.qk_pre] == [2, 6, 10]
    assert all(p.head_mix_pre == 4 and p.head_mix_post == 4 for p in plans)  # head mixing in every layer
    assert not any(p.uses_mta_op for p in preset("baseline").resolve(4, 12))


def test_depth_scale_matches_the_reference_values():
    expected = {0: 0.80, 1: 0.645, 2: 0.529, 3: 0.444, 5: 0.334, 8: 0.254, 12: 0.216, 23: 0.201}
    for layer, value in expected.items():
        assert depth_scale(layer) == pytest.approx(value, abs=1e-3)
