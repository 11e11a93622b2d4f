"""Looking at a sweep needs no torch: `mta-ablate sweep FILE --dry-run` (every arm composed and validated, the
trials listed) and `mta-ablate status NAME` run in a Python where importing torch or Lightning fails, as on a login
node or a laptop without them. The text tasks derive their vocabulary from the tokenizer's spec, so no corpus is
read either."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli import cli

BLOCKED = ("torch", "lightning", "lightning_fabric", "pytorch_lightning", "torchmetrics")
PRELUDE = f"""
import sys

class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}}: not installed here")
        return None

sys.meta_path.insert(0, NoTorch())
from mta_ablate.cli import main
sys.exit(main(sys.argv[1:]))
"""


def without_torch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE, *args], capture_output=True, text=True, env=os.environ.copy(), timeout=120
    )


def test_the_blocker_blocks_torch():
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE.replace("from mta_ablate.cli", "import torch\nfrom mta_ablate.cli")],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0 and "torch: not installed here" in result.stderr


@pytest.mark.parametrize("sweep", ["sweeps/needle.yaml", "sweeps/babilong.yaml", "sweeps/kernel_sizes.yaml"])
def test_a_dry_run_needs_no_torch(workspace, sweep):
    result = without_torch("sweep", sweep, "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "trials" in result.stdout


def test_status_needs_no_torch(workspace):
    created = cli("sweep", "sweeps/needle.yaml", "--workers", "0")  # queued, nothing trained
    assert created.returncode == 0, created.stderr[-3000:]
    result = without_torch("status", "needle")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "waiting" in result.stdout and "variant=mta,key_words=2" in result.stdout
