"""Training compute of an arm: FLOPs of one optimiser step, counted on a meta-device model (nothing is allocated).

equalized_steps(spec)   # {arm: max_steps} so that every arm trains for its reference's FLOPs (budget.equalize)
"""

from __future__ import annotations

from mta_ablate.sweep.spec import SweepSpec


def step_flops(config) -> int:
    """Forward + backward FLOPs of one training batch of an experiment config (as ThroughputMonitor counts them)."""
    from lightning_modules.callbacks import resolved_device
    from lightning_modules.lm_module import step_flops as model_step_flops
    from mta_ablate.data import build_task

    seq = build_task(config.task.name, **config.task.params).seq_len
    return model_step_flops(config.model, config.train.batch_size, seq, resolved_device(config.train)[0])


def equalized_steps(spec: SweepSpec) -> dict[str, int]:
    """Each arm's max_steps = round(reference steps x reference FLOPs per step / arm FLOPs per step)."""
    configs = spec.configs
    flops = {name: step_flops(config) for name, config in configs.items()}
    out = {}
    for arm, ref in spec.reference_of.items():
        budget = configs[ref].train.max_steps * flops[ref]
        out[arm] = max(1, round(budget / flops[arm]))
    return out
