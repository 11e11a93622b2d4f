"""`mta-ablate plan`: the memory estimate of one training step (meta device + fake tensors) against a measured peak,
and the command's answers: exit 0 when every arm fits, exit 2 naming the micro-batch that would fit."""

import json
import os
import subprocess
import sys

import pytest

from tests.cli import cli

MEASURE = """
import json, sys, torch
torch.set_num_threads(1)
from mta_ablate.attention import preset
from mta_ablate.model import ModelConfig, TransformerLM, model_preset, lm_loss
from mta_ablate.footprint import step_peak
variant, rows, seq = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = ModelConfig(vocab_size=259, attention=preset(variant), **{**model_preset("tiny"), "max_seq_len": seq})
estimate, _ = step_peak(cfg, rows, seq, "32-true", "cpu", False)
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024
model = TransformerLM(cfg)
optimizer = torch.optim.AdamW(model.parameters())
tokens = torch.randint(0, 259, (rows, seq + 1))
lm_loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()  # warm-up: libraries, optimizer state; grads freed
optimizer.step()
optimizer.zero_grad(set_to_none=True)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak RSS
base = status("VmRSS")
lm_loss(model(tokens[:, :-1]), tokens[:, 1:]).backward()
print(json.dumps({"estimate": estimate, "measured": status("VmHWM") - base}))
"""


@pytest.mark.parametrize(("variant", "rows", "seq"), [("baseline", 16, 256), ("mta_paper", 16, 256)])
def test_the_estimate_is_within_15pct_of_the_measured_cpu_peak(variant, rows, seq):
    # glibc serves blocks above 128 KiB by mmap and returns them on free, so RSS follows the live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, variant, str(rows), str(seq)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["measured"] > 50 * 2**20  # large enough that allocator noise is small
    assert got["estimate"] == pytest.approx(got["measured"], rel=0.15), got


QUICK = ["train.batch_size=16", "--device", "cpu"]


@pytest.mark.usefixtures("workspace")
def test_plan_exits_0_when_every_arm_fits_and_prints_each_arm():
    done = cli("plan", "sweeps/quickstart.yaml", *QUICK, "--device-memory", "80", "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [r["fits"] for r in out["arms"]] == [True] * len(out["arms"]) and len(out["arms"]) >= 2
    arm = out["arms"][0]
    assert arm["micro_batch"] == 16 and arm["passes"] == 1 and arm["tflops_per_step"] > 0
    assert 0 < arm["activations_gib"] <= arm["step_peak_gib"] < arm["peak_gib"]


@pytest.mark.usefixtures("workspace")
def test_plan_on_a_device_too_small_exits_2_naming_the_micro_batch_that_fits():
    done = cli("plan", "sweeps/quickstart.yaml", *QUICK, "--device-memory", "4.01")
    assert done.returncode == 2
    assert "needs" in done.stderr and "fits with train.micro_batch=" in done.stderr, done.stderr
    done = cli("plan", "sweeps/quickstart.yaml", *QUICK, "--device-memory", "4.0001")
    assert done.returncode == 2 and "nothing fits" in done.stderr, done.stderr


@pytest.mark.usefixtures("workspace")
@pytest.mark.parametrize("memory", ["0", "-3", "nan"])
def test_plan_refuses_a_device_memory_that_is_not_a_size(memory):
    done = cli("plan", "sweeps/quickstart.yaml", "--device-memory", memory)
    assert done.returncode == 2 and "--device-memory" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.usefixtures("workspace")
def test_plan_says_what_seeds_an_effect_would_need_under_the_sweeps_rule():
    done = cli("plan", "sweeps/quickstart.yaml", *QUICK, "--device-memory", "80", "--effect", "1", "--json")
    assert done.returncode == 0, done.stderr
    power = json.loads(done.stdout)["power"]
    assert power["arms"] == 2 and int(power["seeds"]) > 14  # Holm over 2 arms and the rule's looks: more than 1 test's
    done = cli("plan", "sweeps/quickstart.yaml", "--device-memory", "80", "--effect", "-1")
    assert done.returncode == 2 and "--effect=-1.0" in done.stderr
