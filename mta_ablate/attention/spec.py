"""`AttentionSpec`: the typed description of one attention variant, and the named presets.

A spec is data. It says which Multi-Token Attention operations a model uses, with which kernel sizes, in
which layers, with which normalisation and initialisation (as in the paper and its reference code). It knows
nothing about the model's shape: checks that need `n_heads` or `n_layers` run in `resolve()`, which the
model calls when it is built.

    from mta_ablate.attention import AttentionSpec, preset
    spec = preset("mta_paper")                       # the paper's full MTA
    spec = AttentionSpec(qk_pre=(4, 9), layers="every:4:2")
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal, get_args

from mta_ablate.errors import ConfigError

PadKey = Literal["both", "left", "right"]
"""Key-axis padding of the key-query convolution (the query axis is always padded causally, on top).
both: (c_k-1)/2 keys each side, c_k must be odd; left: c_k-1 keys on the left; right: c_k-1 on the right."""

GroupNorm = Literal["off", "plain", "depth_scaled", "gated_scalar", "gated_vector"]
"""Per-head RMSNorm of the attention output (weight of length head_dim, shared by all heads).
off: none; plain: RMSNorm only; depth_scaled: RMSNorm x (1 - (0.8 - 0.6 exp(-0.3 l))) for 0-based layer l;
gated_scalar: RMSNorm then x sigmoid(Linear(D->1)) per head and token (the paper's "scalar gating");
gated_vector: RMSNorm then x sigmoid(Linear(D->D)) elementwise."""

KernelInit = Literal["identity", "zero", "const", "uniform", "diagonal"]
"""Initial key-query kernels. identity: a single 1 at the current query row and current key column, so the
layer starts as standard attention; zero: all 0; const: all 0.3; uniform: U(-1, 1); diagonal: ones on the
diagonal ending at the identity position (query i-k paired with key j-k, a sequence-matching prior)."""

HeadMix = int | Literal["full"] | None
"""Head-mixing group size c_h: heads split into n_heads/c_h contiguous groups, each mixed by a learned
c_h x c_h matrix. "full" (or c_h == n_heads) mixes all heads; None is off."""

Layers = str | tuple[int, ...]
"""Which layers: "all", "none", "every:K" (0, K, 2K, ...), "every:K:OFFSET" (OFFSET, OFFSET+K, ...), or a
tuple of 0-based indices."""


def _allowed(literal) -> str:
    return ", ".join(repr(x) for x in get_args(literal))


@dataclass(frozen=True, kw_only=True)
class AttentionSpec:
    """Every ablation axis of the paper's Table 5, and the layout of MTA over the layers."""

    qk_pre: tuple[int, int] | None = None
    """Key-query convolution (c_q, c_k) on the attention logits before softmax; None is off."""
    qk_post: tuple[int, int] | None = None
    """Key-query convolution (c_q, c_k) on the attention weights after softmax (no renormalisation)."""
    pad_key: PadKey = "both"
    """Key-axis padding of both convolutions."""
    head_mix_pre: HeadMix = None
    """Head mixing of the logits before softmax: group size c_h, "full", or None."""
    head_mix_post: HeadMix = None
    """Head mixing of the weights after softmax: group size c_h, "full", or None."""
    group_norm: GroupNorm = "off"
    """Normalisation of each head's output, see `GroupNorm`."""
    init: KernelInit = "identity"
    """Initial value of the pre-softmax kernel (and of the post-softmax one unless `post_init` is set)."""
    post_init: KernelInit | None = None
    """Initial value of the post-softmax kernel; None uses `init`. (The reference code always uses identity.)"""
    layers: Layers = "all"
    """Layers that get the key-query convolutions."""
    head_mix_layers: Layers = "all"
    """Layers that get head mixing (the reference code mixes heads in every layer)."""
    dropout: float = 0.0
    """Dropout on the attention weights, training only."""
    differential: bool = False
    """Differential attention (the DIFF Transformer, Ye et al. 2024) in every layer, instead of softmax attention:
    heads pair up (2i, 2i+1) into n_heads/2 differential heads whose values are twice as wide; each computes
    (softmax(Q1 K1^T / sqrt(d)) - lambda softmax(Q2 K2^T / sqrt(d))) V, with the learnable scalar
    lambda = exp(lq1 . lk1) - exp(lq2 . lk2) + lambda_init(l), lambda_init(l) = 0.8 - 0.6 exp(-0.3 l) for
    0-based layer l. Same projections (and parameter count) as the baseline plus 4 vectors of head_dim per layer.
    Its paper's per-head norm scaled by (1 - lambda_init) is group_norm="depth_scaled" (preset `diff`). Not
    combinable with the key-query convolutions or head mixing."""

    def __post_init__(self) -> None:  # one check per field, in field order: longer than 60 lines, read as a list
        for name in ("qk_pre", "qk_post"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            if (
                not isinstance(value, tuple)
                or len(value) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)
            ):
                raise ConfigError(
                    f"attention.{name}={value!r}: expected two integers (c_q, c_k), e.g. (6, 11), or None"
                )
            c_q, c_k = value
            if c_q < 1 or c_k < 1:
                raise ConfigError(f"attention.{name}={value!r}: kernel sizes must be >= 1")
            if self.pad_key == "both" and c_k % 2 == 0:
                raise ConfigError(
                    f"attention.{name}={value!r}: pad_key='both' needs an odd key kernel size c_k; "
                    f"try ({c_q}, {c_k + 1}) or pad_key='left'"
                )
        for name, literal in (
            ("pad_key", PadKey),
            ("group_norm", GroupNorm),
            ("init", KernelInit),
        ):
            if getattr(self, name) not in get_args(literal):
                raise ConfigError(f"attention.{name}={getattr(self, name)!r}: allowed values are {_allowed(literal)}")
        if self.post_init is not None and self.post_init not in get_args(KernelInit):
            raise ConfigError(
                f"attention.post_init={self.post_init!r}: allowed values are None, {_allowed(KernelInit)}"
            )
        for name in ("head_mix_pre", "head_mix_post"):
            value = getattr(self, name)
            ok = value is None or value == "full" or (isinstance(value, int) and not isinstance(value, bool))
            if not ok or (isinstance(value, int) and value < 1):
                raise ConfigError(
                    f"attention.{name}={value!r}: expected a head group size c_h >= 1 that divides n_heads, "
                    f"'full', or None"
                )
        for name in ("layers", "head_mix_layers"):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            _parse_layers(name, value)  # syntax only; ranges are checked in resolve()
        if not isinstance(self.dropout, int | float) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"attention.dropout={self.dropout!r}: expected a float in [0, 1)")
        if not isinstance(self.differential, bool):
            raise ConfigError(f"attention.differential={self.differential!r}: expected true or false")
        if self.differential and self.has_mta:
            raise ConfigError(
                "attention.differential=true: differential attention replaces softmax attention and cannot be "
                "combined with qk_pre, qk_post, head_mix_pre or head_mix_post (set them to null)"
            )
        if self.differential and self.dropout:
            raise ConfigError(
                f"attention.differential=true with dropout={self.dropout}: dropout of the differential map is not "
                "implemented; allowed: dropout=0"
            )

    # -- derived, model-dependent views ------------------------------------------------------------

    @property
    def has_mta(self) -> bool:
        """True when any MTA operation (convolution or head mixing) is configured."""
        return any(x is not None for x in (self.qk_pre, self.qk_post, self.head_mix_pre, self.head_mix_post))

    def resolve(self, n_heads: int, n_layers: int) -> list[LayerPlan]:
        """One `LayerPlan` per layer; raises `ConfigError` when the spec does not fit the model."""
        if self.differential and n_heads % 2:
            raise ConfigError(
                f"attention.differential=true needs an even n_heads (pairs of heads make one differential head); "
                f"the model has n_heads={n_heads}"
            )
        groups = {name: _head_group(name, getattr(self, name), n_heads) for name in ("head_mix_pre", "head_mix_post")}
        kq_layers = _layer_set("layers", self.layers, n_layers)
        mix_layers = _layer_set("head_mix_layers", self.head_mix_layers, n_layers)
        return [
            LayerPlan(
                layer_id=i,
                qk_pre=self.qk_pre if i in kq_layers else None,
                qk_post=self.qk_post if i in kq_layers else None,
                head_mix_pre=groups["head_mix_pre"] if i in mix_layers else None,
                head_mix_post=groups["head_mix_post"] if i in mix_layers else None,
            )
            for i in range(n_layers)
        ]

    def replace(self, **changes) -> AttentionSpec:
        """A copy with some fields changed (validated again)."""
        return self.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_dict(cls, values: dict) -> AttentionSpec:
        """Build from plain data (YAML, JSON, MLflow params); unknown keys and wrong types raise `ConfigError`."""
        from mta_ablate.typed import from_dict

        return from_dict(cls, values, "attention")

    def to_dict(self) -> dict:
        """Plain data that `from_dict` reads back (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in dataclasses.fields(self)
        }


@dataclass(frozen=True)
class LayerPlan:
    """What one layer computes, after the spec is resolved against the model's shape."""

    layer_id: int
    qk_pre: tuple[int, int] | None
    qk_post: tuple[int, int] | None
    head_mix_pre: int | None  # resolved group size c_h
    head_mix_post: int | None

    @property
    def uses_mta_op(self) -> bool:
        """False when the layer is plain causal attention (and can run on SDPA)."""
        return any(x is not None for x in (self.qk_pre, self.qk_post, self.head_mix_pre, self.head_mix_post))


def lambda_init(layer_id: int) -> float:
    """0.8 - 0.6 exp(-0.3 l) for 0-based layer l: the DIFF Transformer's initial lambda, behind depth scaling."""
    return 0.8 - 0.6 * math.exp(-0.3 * layer_id)


def depth_scale(layer_id: int) -> float:
    """(1 - lambda_init(l)): the paper's depth scaling of the group norm (and the DIFF Transformer's)."""
    return 1.0 - lambda_init(layer_id)


def _head_group(name: str, value: HeadMix, n_heads: int) -> int | None:
    if value is None:
        return None
    c_h = n_heads if value == "full" else value
    if n_heads % c_h != 0:
        divisors = [d for d in range(1, n_heads + 1) if n_heads % d == 0]
        raise ConfigError(
            f"attention.{name}={value!r}: the head group size must divide n_heads={n_heads}; "
            f"allowed: {divisors} or 'full'"
        )
    return c_h


_LAYERS_HELP = "'all', 'none', 'every:K', 'every:K:OFFSET' or a list of 0-based layer indices"


def _parse_layers(name: str, value: Layers) -> tuple[str, tuple[int, ...] | tuple[int, int]]:
    """Syntax check of a layer selector; returns (kind, data)."""
    if isinstance(value, tuple):
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value):
            raise ConfigError(f"attention.{name}={value!r}: layer indices must be integers >= 0")
        return "list", value
    if value in ("all", "none"):
        return value, ()
    if isinstance(value, str) and value.startswith("every:"):
        parts = value.split(":")[1:]
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) in (1, 2) and numbers[0] >= 1 and (len(numbers) == 1 or numbers[1] >= 0):
            return "every", (numbers[0], numbers[1] if len(numbers) == 2 else 0)
    raise ConfigError(f"attention.{name}={value!r}: expected {_LAYERS_HELP}")


def _layer_set(name: str, value: Layers, n_layers: int) -> set[int]:
    kind, data = _parse_layers(name, value)
    if kind == "all":
        return set(range(n_layers))
    if kind == "none":
        return set()
    if kind == "every":
        step, offset = data
        if offset >= n_layers:
            raise ConfigError(f"attention.{name}={value!r}: offset {offset} is past the last layer {n_layers - 1}")
        return set(range(offset, n_layers, step))
    bad = [i for i in data if i >= n_layers]
    if bad:
        raise ConfigError(
            f"attention.{name}={value!r}: layer index {bad[0]} is out of range; the model has layers 0..{n_layers - 1}"
        )
    return set(data)


# -- presets -----------------------------------------------------------------------------------------

PRESETS: dict[str, AttentionSpec] = {
    # Standard causal softmax attention (SDPA in every layer).
    "baseline": AttentionSpec(),
    # Talking heads (Shazeer et al. 2020): full head mixing before and after softmax, every layer, no conv.
    "talking_heads": AttentionSpec(head_mix_pre="full", head_mix_post="full"),
    # The paper's MTA (configs/830M_mta.yaml): 6x11 pre and post, full head mixing both sides in every layer,
    # key-query convolutions every 4th layer from layer 2, group norm with scalar gating.
    "mta_paper": AttentionSpec(
        qk_pre=(6, 11),
        qk_post=(6, 11),
        head_mix_pre="full",
        head_mix_post="full",
        group_norm="gated_scalar",
        layers="every:4:2",
    ),
    # The toy task's MTA (toy_task/configs/find_block_mta.yaml): a 2x9 pre-softmax convolution in all layers.
    "mta_toy": AttentionSpec(qk_pre=(2, 9)),
    # The DIFF Transformer (Ye et al. 2024), the paper's other baseline: differential attention in every layer,
    # per-head RMSNorm scaled by (1 - lambda_init).
    "diff": AttentionSpec(differential=True, group_norm="depth_scaled"),
}


def preset(name: str, **overrides) -> AttentionSpec:
    """The named preset, optionally with some fields overridden."""
    if name not in PRESETS:
        raise ConfigError(f"attention preset {name!r} is unknown; allowed: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
