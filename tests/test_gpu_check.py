"""The GPU acceptance check, shrunk to the CPU: every step runs and reports what the README's GPU table needs."""

import json
import subprocess
import sys

from tests.cli import cli


def test_gpu_check_runs_every_step_shrunk_on_cpu(workspace):
    done = cli("bench", "gpu-check", "--device", "cpu", "--quick", "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    rows = {r["variant"]: r for r in result["attention"]["ops"][0]["rows"]}
    assert rows["mta_attention"]["saved_maps"] < 1 < rows["materialized"]["saved_maps"]
    assert result["context"]["longest"]["mta_attention"] >= 1024
    cost = {r["variant"]: r for r in result["cost"]}
    assert set(cost) == {"baseline", "talking_heads", "mta_paper"} and cost["baseline"]["time_vs_baseline"] == 1.0
    assert all(r["step_ms"] > 0 and r["peak_mib"] > 0 for r in cost.values())
    assert all(r["estimate_mib"] > 0 and r["aten_ops"] > 0 for r in cost.values())  # plan's figures beside them
    assert cost["mta_paper"]["aten_ops"] > cost["baseline"]["aten_ops"]
    assert result["attention"]["head_mix"]["device"] == "cpu" and result["context"]["dtype"] == "fp32"
    trial = result["trial"]
    assert trial["returncode"] == 0 and "train.accelerator=cpu" in trial["overrides"]
    assert "train.micro_batch=1" in trial["overrides"] and "task.seq_len=1024" in trial["overrides"]
    assert trial["repeats"] and trial["repeat_rel_diff"] == 0.0  # same seed on CPU: bitwise the same final loss
    assert (workspace / "mlflow.db").exists()  # the trial is tracked like any run
    (needle,) = result["needle"]["rows"]
    assert needle["context"] == 256 and 0.0 <= needle["scores"]["ctx256/k2/exact"] <= 1.0


def test_gpu_check_without_the_corpora_is_one_line_and_exit_2(tmp_path):
    env = {**__import__("os").environ, "MTA_HOME": str(tmp_path / "home"), "MTA_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mta_ablate", "bench", "gpu-check", "--device", "cpu", "--quick"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "mta-ablate data fetch books wiki" in done.stderr
    assert not (tmp_path / "home").exists()
