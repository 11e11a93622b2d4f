"""`TransformerLM`: a LLaMA-style decoder-only language model whose attention is an `AttentionSpec`.

    from mta_ablate.attention import preset
    from mta_ablate.model import ModelConfig, TransformerLM
    model = TransformerLM(ModelConfig(vocab_size=259, dim=128, n_layers=4, n_heads=4, max_seq_len=256,
                                      attention=preset("mta_paper")))
    logits = model(tokens)          # tokens: (B, T) long -> logits: (B, T, vocab_size)

Pre-RMSNorm blocks, RoPE, SwiGLU feed-forward, tied embeddings, no biases (the MTA gate has one, as in the
reference). Init as in the paper's lingua configs: truncated normal (+-3 sigma) with sigma = dim^-1/2, the
feed-forward output with hidden^-1/2, norms at 1.

Layout legend: B batch, T positions, E model dim, V vocabulary, F feed-forward hidden.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from mta_ablate.attention.init import GeneratorFor, param_generator, scoped, trunc_normal
from mta_ablate.attention.module import MultiTokenAttention, rope_tables
from mta_ablate.model.config import ModelConfig


class FeedForward(nn.Module):
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, dim: int, hidden: int, std: float):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.std_in, self.std_out = std, hidden**-0.5

    def reset_parameters(self, generator_for: GeneratorFor = lambda name: None) -> None:
        for name, std in (("w1", self.std_in), ("w3", self.std_in), ("w2", self.std_out)):
            trunc_normal(getattr(self, name).weight, std, generator_for(f"{name}.weight"))

    def forward(self, x_BTE: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x_BTE)) * self.w3(x_BTE))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: ModelConfig, attention: MultiTokenAttention):
        super().__init__()
        self.attention_norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.attention = attention
        self.ffn_norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        self.feed_forward = FeedForward(config.dim, config.hidden, config.std)

    def forward(self, x_BTE, cos_TF, sin_TF):
        x_BTE = x_BTE + self.attention(self.attention_norm(x_BTE), cos_TF, sin_TF)
        return x_BTE + self.feed_forward(self.ffn_norm(x_BTE))


class TransformerLM(nn.Module):
    """Decoder-only LM: embeddings -> blocks -> RMSNorm -> tied output projection.

    `seed` fixes the initial weights: each parameter is drawn from its own generator seeded by (seed, its name), so
    two models of one seed share the initial values of every parameter they have in common (`attention/init.py`)."""

    def __init__(self, config: ModelConfig, seed: int = 0):
        super().__init__()
        self.config = config
        plans = config.attention.resolve(config.n_heads, config.n_layers)
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(
            Block(config, MultiTokenAttention(config.dim, config.n_heads, config.attention, plan, config.std))
            for plan in plans
        )
        self.norm = nn.RMSNorm(config.dim, eps=config.norm_eps)
        cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights(seed)
        self.checkpoint_blocks = False
        """Activation checkpointing per block (`train.activation_checkpointing`)."""

    def init_weights(self, seed: int) -> None:
        """Every parameter from its own (seed, name) generator; the output projection is tied to the embedding."""
        generator_for = lambda name: param_generator(seed, name)  # noqa: E731
        trunc_normal(self.tok_embeddings.weight, self.config.std, generator_for("tok_embeddings.weight"))
        for i, layer in enumerate(self.layers):
            layer.attention.reset_parameters(scoped(generator_for, f"layers.{i}.attention"))
            layer.feed_forward.reset_parameters(scoped(generator_for, f"layers.{i}.feed_forward"))

    def forward(self, tokens_BT: torch.Tensor) -> torch.Tensor:
        """tokens (B, T) long -> logits (B, T, V) in the activation dtype."""
        t = tokens_BT.shape[1]
        if t > self.config.max_seq_len:
            raise ValueError(f"sequence length {t} exceeds model.max_seq_len={self.config.max_seq_len}")
        x_BTE = self.tok_embeddings(tokens_BT)
        recompute = self.checkpoint_blocks and torch.is_grad_enabled()
        for layer in self.layers:
            if recompute:  # keep only each block's input; its activations are recomputed in the backward
                x_BTE = checkpoint(layer, x_BTE, self.rope_cos, self.rope_sin, use_reentrant=False)
            else:
                x_BTE = layer(x_BTE, self.rope_cos, self.rope_sin)
        return F.linear(self.norm(x_BTE), self.tok_embeddings.weight)  # tied: (B, T, E) -> (B, T, V)

    def count_params(self) -> dict[str, int]:
        """Parameter counts: total, MTA-only (kernels, head mixes, group norm, gates) and the rest."""
        total = sum(p.numel() for p in self.parameters())
        mta = sum(p.numel() for name, p in self.named_parameters() if is_mta_param(name))
        return {"total": total, "mta": mta, "non_mta": total - mta}


def is_mta_param(name: str) -> bool:
    """True for the parameters MTA adds on top of a standard transformer (named `mta_*`)."""
    return any(part.startswith("mta_") for part in name.split("."))


def token_nll(logits_BTV: torch.Tensor, targets_BT: torch.Tensor) -> torch.Tensor:
    """(B, T) next-token negative log-likelihood in nats (float32 cross-entropy): the one per-position NLL that
    training, validation and evaluation all use."""
    return F.cross_entropy(logits_BTV.float().flatten(0, 1), targets_BT.flatten(), reduction="none").view_as(targets_BT)


def lm_loss(
    logits_BTV: torch.Tensor,
    targets_BT: torch.Tensor,
    mask_BT: torch.Tensor | None = None,
    norm: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over the positions where mask is true (all when None).

    logits and targets are already aligned (logits[:, i] predicts targets[:, i]). One function serves
    training and evaluation so perplexity cannot drift from the training loss. `norm` replaces the mask's own sum as
    the denominator: a rank that holds part of a global batch divides by the whole batch's weight over the number of
    ranks, so that averaging the ranks' gradients gives the whole batch's gradient.
    """
    nll_BT = token_nll(logits_BTV, targets_BT)
    if mask_BT is None:
        return nll_BT.mean()
    mask = mask_BT.to(nll_BT.dtype)
    return (nll_BT * mask).sum() / (mask.sum().clamp_min(1.0) if norm is None else norm)


def paper_mta_overhead(n_layers: int, n_heads: int, head_dim: int, c_q: int, c_k: int, c_h: int) -> int:
    """The paper's MTA parameter overhead (its Table 8):
    2 L M (c_q c_k / 4 + c_h) + L (2 d + 1), for KQ convolutions in a quarter of the layers."""
    return int(2 * n_layers * n_heads * (c_q * c_k / 4 + c_h) + n_layers * (2 * head_dim + 1))
