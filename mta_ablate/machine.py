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
