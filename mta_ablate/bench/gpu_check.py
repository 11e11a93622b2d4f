"""The GPU acceptance check: every number the README's GPU table needs, from one command.

    make gpu-check                                     # mta-ablate bench gpu-check --device cuda
    mta-ablate bench gpu-check --device cpu --quick    # the same steps, shrunk (the test suite runs this)

Steps, in order (each one's result is a plain dict; `run` returns them all):
1. attention: `bench attention` on the device (bf16 on CUDA, fp32 on CPU): the op against SDPA and the reference,
   and the head-mix alternatives, all on the device.
2. context: the longest context one paper layer trains at within 8 GiB (`bench context`), in bf16 on CUDA.
3. cost: step time and peak memory of baseline, talking_heads and mta_paper on the paper's 300m shape at 1,024
   tokens, batch 8, bf16 autocast: what the paper's Table 9 compares (its MTA was 9.5x slower, 4.2x heavier).
   Beside each measured peak, `mta-ablate plan`'s estimate (`footprint`); beside each step time, the aten ops one
   step dispatches (counted on the meta device), so a launch-bound step shows as one.
4. trial: the reference arm of `sweeps/paper_ablation_gpu.yaml` at the sweep's own shape (300m, 1,024 tokens, books +
   code + wiki, global batch 32, bf16) on one device, its batch in micro-batches of 8, through `mta-ablate train`,
   tracked in MLflow like any run; run twice with the same seed: on CUDA the two agree within `REPEAT_RTOL`, not
   bitwise (SDPA's backward and cuDNN's weight gradients are not deterministic there).
5. needle: the needle evaluation at 2K and 4K contexts on the mta_paper model of step 3 (time and memory of
   long-context evaluation; its accuracy means nothing after a few steps).
"""

from __future__ import annotations

import subprocess
import sys
import time

import torch

from mta_ablate.attention import op, preset
from mta_ablate.bench import attention as attention_bench
from mta_ablate.bench import context as context_bench
from mta_ablate.model import ModelConfig, TransformerLM, lm_loss, model_preset

VARIANTS = ("baseline", "talking_heads", "mta_paper")
FULL = dict(shape="300m", seq=1024, batch=8, steps=10, trial_steps=100, needle_contexts=(2048, 4096), max_seq=16384)
QUICK = dict(shape="tiny", seq=64, batch=2, steps=3, trial_steps=2, needle_contexts=(256,), max_seq=1024)
TRIAL = ["model=300m", "attention=mta_paper", "task=lm", "train=gpu", "task.corpora=[books,code,wiki]", "seed=0"]
TRIAL += ["task.seq_len=1024", "train.batch_size=32", "train.micro_batch=8", "train.devices=1"]  # the sweep's shape
TRIAL_ON_CPU = ["model=tiny", "task.seq_len=64", "train.accelerator=cpu", "train.precision=32-true"]
TRIAL_QUICK = ["train.val_every=1", "train.batch_size=2", "train.micro_batch=1", "train.val_batches=1"]
TRIAL_QUICK += ["train.eval_batches=1"]
TRIAL_QUICK += ["train.val_samples=2", "train.eval_samples=2", "train.warmup_steps=0", "train.threads=1"]


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def _model(variant: str, shape: str, seq: int, device: str) -> TransformerLM:
    config = ModelConfig(vocab_size=259, attention=preset(variant), **{**model_preset(shape), "max_seq_len": seq})
    return TransformerLM(config, seed=0).to(device)


def step_cost(shape: str, seq: int, batch: int, steps: int, device: str) -> list[dict]:
    """Median step time (AdamW, bf16 autocast on CUDA) and peak memory of each variant, interleaved per step."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 259, (batch, seq + 1), generator=g).to(device)
    runs = {}
    for v in VARIANTS:
        model = _model(v, shape, seq, device)
        runs[v] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4), [], 0)
    for step in range(steps + 2):  # the first 2 are warm-up
        for v, (model, optimizer, times, _) in runs.items():
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            with _autocast(device):
                loss = lm_loss(model(tokens[:, :-1]), tokens[:, 1:])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            attention_bench.sync(device)
            if step >= 2:
                times.append(time.perf_counter() - start)
            peak = torch.cuda.max_memory_allocated() if device == "cuda" else 0
            runs[v] = (model, optimizer, times, max(peak, runs[v][3]))
    rows = []
    for v, (model, _, times, peak) in runs.items():
        if device != "cuda":  # on CPU: what autograd saves for one forward, the part that depends on the variant
            peak = attention_bench.saved_bytes(lambda m=model: lm_loss(m(tokens[:, :-1]), tokens[:, 1:]))
        rows.append(
            {
                "variant": v,
                "step_ms": sorted(times)[len(times) // 2] * 1e3,
                "peak_mib": peak / 2**20,
                **_planned(model.config, batch, seq, device),
            }
        )
    base = rows[0]
    for r in rows:
        r["time_vs_baseline"] = r["step_ms"] / base["step_ms"]
        r["memory_vs_baseline"] = r["peak_mib"] / base["peak_mib"]
    return rows


def _planned(model_config, batch: int, seq: int, device: str) -> dict:
    """`mta-ablate plan`'s estimate of this step's peak (parameters, AdamW moments and one forward + backward, on fake
    tensors) and the aten ops one forward + backward dispatches with the device's tiling (on the meta device)."""
    from mta_ablate.footprint import ComputeOps, resting_bytes, step_peak

    with torch.device("meta"):
        meta = TransformerLM(model_config)
    n_params = sum(p.numel() for p in meta.parameters())
    precision = "bf16-mixed" if device == "cuda" else "32-true"
    peak, _ = step_peak(model_config, batch, seq, precision, device, checkpointing=False)
    tokens = torch.zeros(batch, seq + 1, dtype=torch.long, device="meta")
    with ComputeOps() as ops, op.tiled_as(device):
        lm_loss(meta(tokens[:, :-1]), tokens[:, 1:]).backward()
    return {"estimate_mib": (resting_bytes(n_params, 0, "auto", 1) + peak) / 2**20, "aten_ops": ops.count}


REPEAT_RTOL = 0.02
"""Two same-seed trials on CUDA must agree on final/loss within this relative tolerance (on CPU: bitwise)."""


def trial(steps: int, device: str, quick: bool) -> dict:
    """The sweep's reference arm through `mta-ablate train`, twice with the same seed; returns the exit codes, wall
    times, last lines, and both final losses with their relative difference."""
    overrides = TRIAL + [f"train.max_steps={steps}", "train.val_every=100"]
    if device == "cpu":
        overrides += TRIAL_ON_CPU
    if quick:
        overrides += TRIAL_QUICK
    runs = []
    for _ in range(2):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "mta_ablate", "train", *overrides], capture_output=True, text=True)
        runs.append((done, time.perf_counter() - start, _last_final_loss() if done.returncode == 0 else None))
    (first, seconds, loss_a), (second, _, loss_b) = runs
    lines = (first.stdout + first.stderr).strip().splitlines()
    diff = abs(loss_a - loss_b) / abs(loss_a) if loss_a and loss_b is not None else None
    tolerance = 0.0 if device == "cpu" else REPEAT_RTOL
    return {
        "overrides": overrides,
        "returncode": first.returncode or second.returncode,
        "seconds": seconds,
        "tail": lines[-12:],
        "final_loss": [loss_a, loss_b],
        "repeat_rel_diff": diff,
        "repeat_tolerance": tolerance,
        "repeats": diff is not None and diff <= tolerance,
    }


def _last_final_loss() -> float | None:
    """final/loss of the newest run in this workspace's MLflow experiment `train`."""
    from mta_ablate.tracking import mlflow_store

    client = mlflow_store.client()
    experiment = client.get_experiment_by_name("train")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].data.metrics.get("final/loss") if runs else None


def needle(contexts: tuple[int, ...], device: str, quick: bool) -> dict:
    """Needle evaluation (2 needles) of a briefly trained mta_paper model at each context: seconds and peak memory."""
    from mta_ablate.evaluate import needle_grid

    shape = QUICK["shape"] if quick else FULL["shape"]
    model = _model("mta_paper", shape, max(contexts) + 64, device)
    rows = []
    for ctx in contexts:
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with _autocast(device):
            scores = needle_grid(model, context_lens=(ctx,), n_needles=(2,), depth_bins=1, n=4 if quick else 32)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
        rows.append({"context": ctx, "seconds": time.perf_counter() - start, "peak_mib": peak, "scores": scores})
    return {"rows": rows}


def run(device: str = "cuda", quick: bool = False) -> dict:
    p = QUICK if quick else FULL
    dtype = "bf16" if device == "cuda" else "fp32"
    # quick: maps just above op.KEEP_ELEMENTS (2 x 4 x 368^2), so the memory-lean path runs, as at the full shapes
    shapes = (attention_bench.Shape("check", 2, 4, 368, 8, (2, 3)),) if quick else attention_bench.SHAPES
    result = {"device": device, "quick": quick, "torch": torch.__version__}
    result["attention"] = attention_bench.run(repeats=1 if quick else 7, shapes=shapes, device=device, dtype=dtype)
    result["context"] = context_bench.longest_context(max_seq=p["max_seq"], device=device, dtype=dtype)
    result["cost"] = step_cost(p["shape"], p["seq"], p["batch"], p["steps"], device)
    result["trial"] = trial(p["trial_steps"], device, quick)
    result["needle"] = needle(p["needle_contexts"], device, quick)
    return result
