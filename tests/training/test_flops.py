"""One compute convention for every arm: attention is charged its causal half, for SDPA (which torch's FLOP counter
charges the whole map) and for the blocked MTA op (which computes causal blocks), so a variant that does strictly
more work than the baseline never counts fewer FLOPs, and equal-FLOPs comparisons do not flatter it."""

import pytest
import torch
import torch.nn.functional as F
from lightning.fabric.utilities.throughput import measure_flops

from lightning_modules.lm_module import CausalSDPA, step_flops
from mta_ablate.attention import preset
from mta_ablate.config.compose import load_experiment
from mta_ablate.model import ModelConfig, model_preset
from mta_ablate.trial import run_trial

LADDER = {**model_preset("toy"), "n_layers": 4, "n_heads": 4, "dim": 64, "max_seq_len": 256}  # the needle ladder's


def test_causal_sdpa_is_charged_its_causal_half():
    b, h, s, d = 2, 4, 256, 16
    with torch.device("meta"):
        q = torch.randn(b, h, s, d, requires_grad=True)
    with CausalSDPA() as causal:
        sdpa = lambda: F.scaled_dot_product_attention(q, q, q, is_causal=True)  # noqa: E731
        counted = measure_flops(torch.nn.Module(), sdpa, lambda y: y.sum())
    full = 3 * 2 * (2 * b * h * s * s * d)  # QK^T and PV, forward and (twice) backward
    assert counted == full and counted - causal.overcount == full * (s + 1) // (2 * s)


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_talking_heads_counts_at_least_the_baselines_flops_at_the_ladder_shape(device_type):
    flops = {
        v: step_flops(ModelConfig(vocab_size=259, attention=preset(v), **LADDER), 16, 256, device_type)
        for v in ("baseline", "talking_heads", "mta_paper")
    }
    assert flops["baseline"] < flops["talking_heads"] < flops["mta_paper"], flops


@pytest.mark.usefixtures("tracked_workspace")
def test_a_talking_heads_trial_logs_at_least_the_baselines_flops_per_step():
    shape = ["model=toy", "model.n_layers=4", "model.n_heads=4", "model.dim=64", "model.max_seq_len=256"]
    run = ["task=lm", "task.seq_len=256", "train.batch_size=16", "train.max_steps=2", "train.val_every=2"]
    run += ["train.val_batches=1", "train.eval_batches=1", "train.val_samples=2", "train.eval_samples=2"]
    logged = {}
    for v in ("baseline", "talking_heads"):
        config = load_experiment([*shape, *run, f"attention={v}", f"tracking.run_name={v}"])
        logged[v] = run_trial(config).metrics["perf/flops_per_step"]
    assert logged["talking_heads"] >= logged["baseline"], logged
