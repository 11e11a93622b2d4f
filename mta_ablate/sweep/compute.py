"""Training compute of an arm: FLOPs of one optimiser step, counted on a meta-device model (nothing is allocated).

equalized_steps(spec)   # {arm: max_steps} so that every arm trains for its reference's FLOPs (budget.equalize)
"""

from __future__ import annotations

from mta_ablate.sweep.spec import SweepSpec


def step_flops(config) -> int:
    """Forward + backward FLOPs of one training batch of an experiment config (as ThroughputMonitor counts them)."""
    import torch
    from lightning.fabric.utilities.throughput import measure_flops

    from mta_ablate.data import build_task
    from mta_ablate.model import TransformerLM

    seq = build_task(config.task.name, **config.task.params).seq_len
    with torch.device("meta"):
        model = TransformerLM(config.model)
        tokens = torch.zeros(config.train.batch_size, seq, dtype=torch.long)
    return int(measure_flops(model, lambda: model(tokens), lambda y: y.float().sum()))


def equalized_steps(spec: SweepSpec) -> dict[str, int]:
    """Each arm's max_steps = round(reference steps x reference FLOPs per step / arm FLOPs per step)."""
    from mta_ablate.config.compose import load_experiment

    configs = {a.name: load_experiment(spec.experiment_overrides(a.overrides, spec.seeds[0])) for a in spec.arms}
    flops = {name: step_flops(config) for name, config in configs.items()}
    out = {}
    for arm, ref in spec.reference_of.items():
        budget = configs[ref].train.max_steps * flops[ref]
        out[arm] = max(1, round(budget / flops[arm]))
    return out
