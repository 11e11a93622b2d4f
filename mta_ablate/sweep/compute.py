"""Training compute of an arm: FLOPs of one optimiser step, counted on a meta-device model (nothing is allocated), or
its step time, measured side by side on this host's device.

equalized_steps(spec)   # {arm: max_steps}: every arm gets its reference's training FLOPs or wall time (budget.equalize)
"""

from __future__ import annotations

import time

from mta_ablate.errors import ConfigError
from mta_ablate.sweep.spec import SweepSpec


def step_flops(config) -> int:
    """Forward + backward FLOPs of one training batch of an experiment config (as ThroughputMonitor counts them)."""
    from lightning_modules.callbacks import resolved_device
    from lightning_modules.lm_module import step_flops as model_step_flops

    seq = config.task.seq_len
    return model_step_flops(config.model, config.train.batch_size, seq, resolved_device(config.train)[0])


def step_seconds(configs: dict, warmup: int = 2, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one training step (forward, backward, AdamW; all of a device's passes) of each arm's model,
    on the arms' training device with their thread count, the arms interleaved step by step so that a slow moment of a
    shared machine falls on every arm alike."""
    import torch

    from lightning_modules.callbacks import resolved_device
    from mta_ablate.model import TransformerLM, lm_loss

    threads = torch.get_num_threads()
    runs = {}
    for name, config in configs.items():
        (device, precision), train = resolved_device(config.train), config.train
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"sweep.budget.equalize=time: arm {name} trains on CUDA, and its step time is measured where the sweep "
                "is created; create it on a GPU host (or use equalize: flops)"
            )
        seq = config.task.seq_len
        model = TransformerLM(config.model, seed=0).to(device)
        g = torch.Generator().manual_seed(0)
        tokens = torch.randint(0, config.model.vocab_size, (train.rows_per_pass, seq + 1), generator=g).to(device)
        autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
        runs[name] = (model, torch.optim.AdamW(model.parameters()), tokens, train, device, autocast, [])
    timings = {name: run[-1] for name, run in runs.items()}
    try:
        for step in range(warmup + repeats):
            for model, optimizer, tokens, train, device, autocast, times in runs.values():
                torch.set_num_threads(train.threads or threads)
                model.checkpoint_blocks = train.activation_checkpointing
                start = time.perf_counter()
                for _ in range(train.accumulation):
                    with autocast:  # the training precision (bf16 on CUDA: the kernels training will use)
                        loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
                    loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if device == "cuda":
                    torch.cuda.synchronize()
                if step >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
        if torch.cuda.is_available():
            runs.clear()
            torch.cuda.empty_cache()  # the launcher keeps no GPU memory for the sweep's lifetime
    return {name: sorted(times)[len(times) // 2] for name, times in timings.items()}


def equalized_steps(spec: SweepSpec, cost: dict[str, float] | None = None) -> dict[str, int]:
    """Each arm's max_steps = round(reference steps x reference cost per step / arm cost per step), the cost being
    FLOPs (`budget.equalize: flops`) or measured seconds (`time`; pass `cost` to reuse a measurement)."""
    configs = spec.configs
    if cost is None:
        cost = step_costs(spec)
    out = {}
    for arm, ref in spec.reference_of.items():
        budget = configs[ref].train.max_steps * cost[ref]
        out[arm] = max(1, round(budget / cost[arm]))
    return out


def step_costs(spec: SweepSpec) -> dict[str, float]:
    """{arm: FLOPs or seconds of one step}, by the sweep's `budget.equalize`."""
    if spec.equalize == "time":
        return step_seconds(spec.configs)
    return {name: float(step_flops(config)) for name, config in spec.configs.items()}
