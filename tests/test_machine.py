"""`machine.keep_freed_memory`: freed maps stay in the process for reuse (no page faults on the next step's maps)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Allocate and touch 16 MiB, free it, and print how much of it the process still holds (resident pages, MiB).
PROBE = """
import ctypes, os, sys
from mta_ablate.machine import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before = rss()
p = libc.malloc(16 << 20)
ctypes.memset(p, 1, 16 << 20)
libc.free(ctypes.c_void_p(p))
print(rss() - before)
"""


def _held_after_free(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return float(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")
def test_freed_maps_stay_resident_for_reuse_only_when_asked():
    assert _held_after_free("default") < 4  # glibc's default: a 16 MiB block is its own mmap, unmapped on free
    assert _held_after_free("keep") >= 15  # kept in the heap: the next allocation reuses pages already faulted in


def test_the_cli_and_child_ranks_keep_freed_memory():
    """Both process entry points make the call (read from their source: calling them would start a command)."""
    import inspect

    from mta_ablate import cli, rank_entry

    for entry in (cli.main, rank_entry.main):
        assert "keep_freed_memory()" in inspect.getsource(entry)
