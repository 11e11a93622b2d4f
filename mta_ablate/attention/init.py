"""Paired initialisation: every parameter's initial values depend only on (seed, parameter name).

Two arms of one seed then start from bit-identical values for every parameter they share (same name and
shape), whatever else either arm adds or removes (extra kernels, gates, head mixes, layers without MTA): a
paired difference measures the variant, not the order in which modules happened to draw from one generator.

    gen = param_generator(seed, "layers.0.attention.wq.weight")   # a fresh CPU generator for that name
    init_digest(model)                                             # {name: sha256 of the fp32 bytes}
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

GeneratorFor = Callable[[str], "torch.Generator | None"]
"""Maps a parameter's name (relative to the module being initialised) to the generator that fills it."""


def param_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from sha256(seed, name): the same stream for one name in every arm of a seed."""
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def scoped(generator_for: GeneratorFor, prefix: str) -> GeneratorFor:
    """The generator function of a submodule: local names are prefixed with the submodule's path."""
    return lambda local: generator_for(f"{prefix}.{local}")


def trunc_normal(tensor: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """Truncated normal at +-3 sigma, drawn on the CPU (so the values do not depend on the device), then copied."""
    if tensor.is_meta:
        return
    with torch.no_grad():
        values = torch.empty(tensor.shape, dtype=torch.float32)
        nn.init.trunc_normal_(values, std=std, a=-3 * std, b=3 * std, generator=generator)
        tensor.copy_(values)


def normal(tensor: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """Normal(0, std), drawn on the CPU, then copied."""
    if tensor.is_meta:
        return
    with torch.no_grad():
        tensor.copy_(torch.empty(tensor.shape, dtype=torch.float32).normal_(0.0, std, generator=generator))


def uniform(tensor: torch.Tensor, low: float, high: float, generator: torch.Generator | None) -> None:
    if tensor.is_meta:
        return
    with torch.no_grad():
        tensor.copy_(torch.empty(tensor.shape, dtype=torch.float32).uniform_(low, high, generator=generator))


def init_digest(model: nn.Module) -> dict[str, str]:
    """{parameter name: sha256 of its fp32 bytes}: logged before the first step, so pairing can be checked later."""
    out = {}
    for name, param in model.named_parameters():
        data = param.detach().float().cpu().contiguous().numpy().tobytes()
        out[name] = hashlib.sha256(data).hexdigest()
    return out
