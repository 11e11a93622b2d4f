"""Model shapes the sweeps name. `vocab_size` is filled from the data when the model is built.

toy/tiny/small run on a 2-core CPU; 300m and 880m are the paper's shapes (its appendix configs) for GPU users.
"""

from __future__ import annotations

from mta_ablate.errors import ConfigError

MODEL_PRESETS: dict[str, dict] = {
    # The paper's toy-task model (find_block_*.yaml) is dim 256, 4 layers, 2 heads; this is the CPU probe shape.
    "toy": dict(dim=64, n_layers=2, n_heads=2, ffn_hidden=256, max_seq_len=128),
    "tiny": dict(dim=128, n_layers=4, n_heads=4, ffn_hidden=384, max_seq_len=256),
    "small": dict(dim=256, n_layers=8, n_heads=4, ffn_hidden=768, max_seq_len=512),
    "300m": dict(dim=1024, n_layers=20, n_heads=16, max_seq_len=2048, rope_theta=100_000.0),
    "880m": dict(dim=1536, n_layers=24, n_heads=16, max_seq_len=2048, rope_theta=100_000.0),
}


def model_preset(name: str) -> dict:
    """Keyword arguments of `ModelConfig` (without vocab_size and attention) for a named shape."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"model preset {name!r} is unknown; allowed: {', '.join(MODEL_PRESETS)}")
    return dict(MODEL_PRESETS[name])
