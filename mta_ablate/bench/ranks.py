"""Multi-device benchmark: one trial config trained on 1 rank and on N ranks (DDP; gloo processes on CPU).

    mta-ablate bench ranks [--devices 2] [--steps 60] [--repeats 3] [--json]

Every run is a real trial (`run_trial`, the path of `mta-ablate train` and of sweep workers) into a throwaway
workspace, with the same global batch, seed and thread count per rank; runs alternate 1, N, 1, N, ... and medians
are reported. Step time is Lightning's throughput monitor over the last quarter of the steps (steady state); start-up
is the rest of the time to the end of training (on N ranks: the child processes, the process group, DDP's set-up).
"""

from __future__ import annotations

import os
import statistics
import tempfile

SHAPE = [
    "model=toy",
    "task=find_block",
    "attention=mta_toy",
    "attention.qk_pre=[2,7]",
    "train=cpu",
    "train.checkpoint=false",
    "train.val_batches=1",
    "train.val_samples=16",
    "train.eval_batches=1",
    "train.eval_samples=16",
    "train.progress=none",
    "train.log_every=5",
    "tracking.experiment=bench_ranks",
]
"""The toy task's MTA trial (batch 64 x 57 tokens, dim 64, 2 layers), 1 thread per rank."""


def run(devices: int = 2, steps: int = 60, repeats: int = 3) -> dict:
    import torch

    from mta_ablate.config.compose import load_experiment
    from mta_ablate.trial import run_trial

    base = [*SHAPE, f"train.max_steps={steps}", f"train.val_every={steps}"]
    times: dict[int, list[tuple[float, float]]] = {1: [], devices: []}
    old_home = os.environ.get("MTA_HOME")
    with tempfile.TemporaryDirectory() as home:
        os.environ["MTA_HOME"] = home  # runs and checkpoints of the benchmark are thrown away
        try:
            for i in range(repeats):
                for n in (1, devices):
                    config = load_experiment([*base, f"train.devices={n}", f"tracking.run_name=d{n}r{i}"])
                    result = run_trial(config)
                    step_ms = result.metrics["perf/step_ms"]  # rolling over the last steps: no start-up in it
                    other_s = max(
                        0.0, result.timings["setup_s"] + result.timings["fit_s"] - result.steps * step_ms / 1000
                    )
                    times[n].append((step_ms, other_s))
        finally:
            if old_home is None:
                os.environ.pop("MTA_HOME", None)
            else:
                os.environ["MTA_HOME"] = old_home
    rows = []
    for n, runs in times.items():
        step_ms = statistics.median(ms for ms, _ in runs)
        rows.append({"devices": n, "step_ms": step_ms, "setup_s": statistics.median(s for _, s in runs)})
    for row in rows:
        row["step_time_vs_one"] = row["step_ms"] / rows[0]["step_ms"]
    return {
        "torch": torch.__version__,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "shape": "toy model, mta_toy 2x7, find_block, batch 64 x 57 tokens, 1 thread per rank",
        "steps": steps,
        "repeats": repeats,
        "rows": rows,
    }
