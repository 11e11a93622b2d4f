"""Paired initialisation: a parameter's initial values depend only on (seed, its name)."""

import torch

from mta_ablate.attention import PRESETS, preset
from mta_ablate.attention.init import init_digest
from mta_ablate.model import ModelConfig, TransformerLM

PRESET_NAMES = ("baseline", "talking_heads", "mta_toy", "mta_paper", "diff")


def build(spec, seed, ffn_hidden=48, n_layers=4):
    config = ModelConfig(
        vocab_size=17, dim=32, n_layers=n_layers, n_heads=4, ffn_hidden=ffn_hidden, max_seq_len=32, attention=spec
    )
    return TransformerLM(config, seed=seed)


def test_the_presets_listed_here_cover_every_preset():
    assert set(PRESET_NAMES) == set(PRESETS)


def test_shared_parameters_are_bit_identical_across_presets_for_one_seed():
    digests = {name: init_digest(build(preset(name), seed=3)) for name in PRESET_NAMES}
    reference = digests["baseline"]
    for name, digest in digests.items():
        shared = set(digest) & set(reference)
        assert len(shared) == len(reference), name  # every baseline parameter exists in each preset
        assert all(digest[p] == reference[p] for p in shared), name
    # mta_paper adds gates, kernels and head mixes: they exist, and they did not shift anything else
    assert any("mta_gate" in p for p in digests["mta_paper"])


def test_another_seed_gives_other_values():
    a, b = init_digest(build(preset("mta_paper"), seed=0)), init_digest(build(preset("mta_paper"), seed=1))
    drawn = [p for p in a if "norm" not in p and "head_mix" not in p and "kernel" not in p and "bias" not in p]
    assert drawn and all(a[p] != b[p] for p in drawn)


def test_a_changed_width_changes_no_other_parameter():
    a, b = init_digest(build(preset("baseline"), 0, ffn_hidden=48)), init_digest(build(preset("baseline"), 0, 64))
    differing = {p for p in a if a[p] != b[p]}
    assert differing and all("feed_forward" in p for p in differing)


def test_the_global_generator_does_not_matter():
    torch.manual_seed(0)
    a = init_digest(build(preset("mta_paper"), seed=5))
    torch.manual_seed(123)
    torch.rand(1000)
    assert init_digest(build(preset("mta_paper"), seed=5)) == a


def test_identity_init_variants_compute_the_baseline_function_at_step_zero():
    tokens = torch.randint(0, 17, (2, 24), generator=torch.Generator().manual_seed(0))
    outputs = {name: build(preset(name), seed=7)(tokens) for name in ("baseline", "talking_heads", "mta_toy")}
    for name in ("talking_heads", "mta_toy"):
        torch.testing.assert_close(outputs[name], outputs["baseline"], rtol=1e-5, atol=1e-5)
    # and a different seed is a different function
    assert not torch.allclose(build(preset("baseline"), seed=8)(tokens), outputs["baseline"])
