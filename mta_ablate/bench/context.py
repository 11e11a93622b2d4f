"""Context benchmark: for each op, the longest sequence one paper layer (B=1, H=4, D=64, 6x11 pre+post, full head
mixes) trains at (forward+backward) within a memory limit, each length measured in a fresh process (peak RSS
growth on Linux CPUs, peak allocated on CUDA).

    mta-ablate bench context [--limit-gib 8] [--max-seq 16384] [--json]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import torch

from mta_ablate.attention.functional import materialized_mta_attention
from mta_ablate.attention.op import mta_attention
from mta_ablate.bench.attention import Shape, inputs, sync

CONTEXT_OPS = ("materialized", "mta_attention")


def context_peak(op: str, seq: int, device: str = "cpu", dtype: str = "fp32") -> dict:
    """Peak memory (bytes) and time of one forward+backward of a paper layer (B=1, H=4, D=64, 6x11 pre+post,
    full head mixes) at sequence length `seq`. Run it in a fresh process: the RSS peak is per process."""
    fn = {"materialized": materialized_mta_attention, "mta_attention": mta_attention}[op]

    def step(q, k, v, pre, post, pre_mix, post_mix):
        out = fn(q, k, v, pre_kernel=pre, post_kernel=post, pre_head_mix=pre_mix, post_head_mix=post_mix)
        out.sum().backward()

    from mta_ablate.bench.attention import DTYPES

    # one-time allocations are not the op's
    step(*inputs(Shape("warm-up", 1, 4, 64, 64), device=device, dtype=DTYPES[dtype]))
    tensors = inputs(Shape("context", 1, 4, seq, 64), device=device, dtype=DTYPES[dtype])
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.max_memory_allocated()
    else:
        base = _reset_peak_rss()
    start = time.perf_counter()
    step(*tensors)
    sync(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _peak_rss()) - base
    return {"op": op, "seq": seq, "dtype": dtype, "peak_bytes": peak, "seconds": seconds}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def _reset_peak_rss() -> int:
    """Reset this process's peak RSS (Linux: /proc/self/clear_refs) and return the current RSS in bytes. The
    rusage peak cannot be used: a child started by fork + exec inherits its parent's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def _peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


def _context_in_child(op: str, seq: int, device: str, dtype: str = "fp32") -> dict:
    code = (
        f"import json, torch; torch.set_num_threads({torch.get_num_threads()}); "
        "from mta_ablate.bench.context import context_peak; "
        f"print(json.dumps(context_peak({op!r}, {seq}, {device!r}, {dtype!r})))"
    )
    # glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, so the RSS of an op that
    # allocates blocks of growing size would measure the allocator; served by mmap, RSS follows live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:  # e.g. killed for memory: it did not fit
        return {"op": op, "seq": seq, "peak_bytes": None, "seconds": None, "error": done.stderr.strip()[-300:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def longest_context(
    limit_gib: float = 8.0, start: int = 1024, max_seq: int = 16384, device: str = "cpu", dtype: str | None = None
) -> dict:
    """For each op, double the length from `start` while the measured peak stays within the limit. A length
    whose peak, extrapolated quadratically from the previous one, would exceed the limit by 2x is not run."""
    dtype = dtype or ("bf16" if device == "cuda" else "fp32")  # what training runs in on the device
    limit = limit_gib * 2**30
    rows = []
    for op in CONTEXT_OPS:
        seq, previous = start, None
        while seq <= max_seq:
            if previous and previous["peak_bytes"] * (seq / previous["seq"]) ** 2 > 2 * limit:
                rows.append({"op": op, "seq": seq, "peak_bytes": None, "seconds": None, "skipped": True})
                break
            row = _context_in_child(op, seq, device, dtype)
            rows.append(row)
            if row["peak_bytes"] is None or row["peak_bytes"] > limit:
                break
            previous, seq = row, seq * 2
    longest = {
        op: max((r["seq"] for r in rows if r["op"] == op and r["peak_bytes"] and r["peak_bytes"] <= limit), default=0)
        for op in CONTEXT_OPS
    }
    return {"limit_gib": limit_gib, "device": device, "dtype": dtype, "rows": rows, "longest": longest}
