"""A sweep followed in a log (output piped, `nohup`, a batch job): one plain line per trial as it starts and ends,
while the sweep runs, not one table at the end."""

import os
import subprocess
import sys
import time


def test_a_piped_sweep_prints_each_trial_as_it_finishes(tracked_workspace):
    cmd = [sys.executable, "-m", "mta_ablate", "sweep", "sweeps/quickstart.yaml", "--workers", "1"]
    cmd += ["sweep.seeds.initial=2", "sweep.seeds.max=2", "train.max_steps=12", "train.val_every=6", "sweep.name=piped"]
    env = {**os.environ, "MTA_HOME": str(tracked_workspace), "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines = []
    for line in proc.stdout:  # as the sweep writes them
        lines.append((time.monotonic(), line.rstrip()))
    proc.wait(timeout=600)
    end = time.monotonic()
    assert proc.returncode == 0, "\n".join(text for _, text in lines)
    ends = [(t, text) for t, text in lines if text.startswith("trial ") and " complete" in text]
    assert len(ends) == 6, lines  # 3 arms x 2 seeds
    assert all("objective=" in text and " in " in text for _, text in ends)
    assert end - ends[0][0] > 3, "the first trial's line came only at the end"
    assert any(text.startswith("trial ") and text.endswith(" running") for _, text in lines)
    assert not any("┃" in text for _, text in lines), "a table in a log"
    assert any(text.startswith("sweep piped: ") and "6 complete" in text for _, text in lines)
    worker_logs = "".join(p.read_text() for p in (tracked_workspace / "logs" / "piped").glob("*"))
    assert worker_logs.count(" complete objective=") == 6, worker_logs[-3000:]  # the workers' own lines
    assert "starting fresh" not in worker_logs or "WARNING" not in worker_logs.split("starting fresh")[0][-200:]
