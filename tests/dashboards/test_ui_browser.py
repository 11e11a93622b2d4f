"""`mta-ablate ui --optuna` in a real headless Chromium: the MLflow UI opens a sweep's runs table grouped by arm (not
the GenAI overview), and optuna-dashboard names the objective.

Needs Debian's chromium (`make browser`); skipped with that reason when it is absent.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from mta_ablate.tracking.mlflow_store import sweep_view_url, tracking_uri
from tests.dashboards.test_html_browser import CHROMIUM, FLAGS
from tests.dashboards.test_ui import free_port, get
from tests.sweep.test_runner import sweep_file

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: make browser")


def dom(url: str, profile) -> str:
    flags = [f for f in FLAGS if not f.startswith("--virtual-time-budget")] + ["--virtual-time-budget=12000"]
    done = subprocess.run(
        [CHROMIUM, *flags, f"--user-data-dir={profile}", "--window-size=1400,900", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done.stdout


def test_the_ui_lands_on_a_sweeps_runs_grouped_by_arm_and_the_dashboard_names_the_objective(workspace, tmp_path):
    design = {"kind": "arms", "arms": [{"name": "baseline", "overrides": {}}, {"name": "wide", "overrides": {}}]}
    path = sweep_file(tmp_path, "look", design, seeds=[0])
    cmd = [sys.executable, "-m", "mta_ablate", "sweep", str(path), "--workers", "1"]  # as a user runs it
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    port, optuna_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate", "ui", "--port", str(port), "--optuna", "--optuna-port", str(optuna_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while get(f"http://127.0.0.1:{port}/health")[0] != 200 or get(f"http://127.0.0.1:{optuna_port}/")[0] != 200:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the UIs did not answer within 120 s"
            time.sleep(0.5)
        experiment = MlflowClient(tracking_uri()).get_experiment_by_name("look").experiment_id
        link = sweep_view_url(f"http://127.0.0.1:{port}", experiment)
        page = dom(link, tmp_path / "p1")
        assert "Group by: mta.arm" in page and "Group: baseline" in page and "Group: wide" in page, page[-3000:]
        assert "toy/error" in page and "Detect Issues" not in page  # the runs table, not the GenAI overview
        dashboard = dom(f"http://127.0.0.1:{optuna_port}/dashboard/studies/1", tmp_path / "p2")
        assert "toy/error" in dashboard and "Objective 0" not in dashboard, dashboard[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f"sweep look: {link}" in output
