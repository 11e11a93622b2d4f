"""Model shapes the sweeps name, read from their one home: the `model` config group (`mta_ablate/conf/model/*.yaml`).

toy/tiny/small run on a 2-core CPU; toy_paper, 300m and 880m are the paper's shapes (its appendix configs).
`vocab_size` is filled from the data when the model is built.
"""

from __future__ import annotations

from importlib import resources

import yaml

from mta_ablate.errors import ConfigError


def _group() -> dict[str, object]:
    return {p.name.removesuffix(".yaml"): p for p in resources.files("mta_ablate.conf").joinpath("model").iterdir()}


def model_presets() -> list[str]:
    """Names of the packaged model shapes."""
    return sorted(name for name in _group() if not name.startswith("_"))


def model_preset(name: str) -> dict:
    """Keyword arguments of `ModelConfig` (without vocab_size and attention) for a named shape."""
    path = _group().get(name)
    if path is None:
        raise ConfigError(f"model preset {name!r} is unknown; allowed: {', '.join(model_presets())}")
    return dict(yaml.safe_load(path.read_text()))
