"""`ModelConfig`: the shape of the language model, as data (no torch: configs are built and checked without it)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from mta_ablate.attention.spec import AttentionSpec
from mta_ablate.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of the language model. `vocab_size` comes from the data, never from a constant."""

    vocab_size: int
    """Vocabulary size of the tokenizer."""
    dim: int = 256
    """Model width E."""
    n_layers: int = 4
    """Number of transformer blocks."""
    n_heads: int = 4
    """Attention heads; head_dim = dim // n_heads."""
    max_seq_len: int = 512
    """Longest sequence the RoPE tables cover."""
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    """The attention variant (see `mta_ablate.attention.spec`)."""
    ffn_hidden: int | None = None
    """SwiGLU hidden size F; None = round_up(int(8 * dim / 3), multiple_of) as in LLaMA/lingua."""
    multiple_of: int = 256
    """Rounding of the default feed-forward hidden size."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_theta: float = 10_000.0
    """RoPE base (the paper's configs use 100,000)."""
    init_std: float | None = None
    """Std of the projection and embedding init; None = dim^-1/2."""

    def __post_init__(self) -> None:
        positive = ("vocab_size", "dim", "n_layers", "n_heads", "max_seq_len", "multiple_of")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name}={value!r}: expected an integer >= 1")
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"model.{name}={value!r}: expected a positive finite number")
        if self.dim % self.n_heads:
            raise ConfigError(f"model.dim={self.dim}: must be divisible by model.n_heads={self.n_heads}")
        if (self.dim // self.n_heads) % 2:
            raise ConfigError(f"model.dim / model.n_heads = {self.dim // self.n_heads}: RoPE needs an even head dim")
        if self.ffn_hidden is not None and (not isinstance(self.ffn_hidden, int) or self.ffn_hidden < 1):
            raise ConfigError(f"model.ffn_hidden={self.ffn_hidden!r}: expected an integer >= 1 or None")
        if not isinstance(self.attention, AttentionSpec):
            raise ConfigError(f"model.attention={self.attention!r}: expected an AttentionSpec")
        self.attention.resolve(self.n_heads, self.n_layers)  # raises ConfigError when it does not fit

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return -(-int(8 * self.dim / 3) // self.multiple_of) * self.multiple_of

    @property
    def std(self) -> float:
        return self.init_std if self.init_std is not None else self.dim**-0.5

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)
