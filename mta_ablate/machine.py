"""The CPU this process runs on: its model name and instruction-set flags (Linux /proc/cpuinfo). Benchmarks and run
records name it, because ratios and last digits differ between CPUs (an Intel Xeon and an AMD EPYC VM, say)."""

from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The processor's model name, else what the platform module knows."""
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The processor's feature flags (avx2, avx512f, ...); empty where /proc/cpuinfo is not there."""
    return set((_cpuinfo_field("flags") or "").split())


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel: blocks up to
    32 MiB come from the heap (not a fresh mmap each time) and the heap's top is trimmed only past 1 GiB free.
    A training step allocates and frees the same maps every step; fresh pages cost a page fault each on first
    touch, which measured about a fifth of an MTA layer's CPU time. The process keeps its peak heap instead of
    returning it between steps. Returns False where the C library is not glibc (the call is then skipped)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))
