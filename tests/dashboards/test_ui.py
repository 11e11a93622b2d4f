"""`mta-ablate ui`: the MLflow server on the embedded store answers, shows the sweep, and stops on Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from mta_ablate.cli import main
from mta_ablate.commands.ui import mlflow_command


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read()
    except OSError:
        return 0, b""


def test_mlflow_command_serves_the_store_and_its_artifacts():
    cmd = mlflow_command("sqlite:////w/mlflow.db", "file:///w/mlartifacts", "127.0.0.1", 5001)
    assert cmd[1:4] == ["-m", "mlflow", "server"]
    assert cmd[cmd.index("--backend-store-uri") + 1] == "sqlite:////w/mlflow.db"
    assert cmd[cmd.index("--artifacts-destination") + 1] == "file:///w/mlartifacts"
    assert cmd[cmd.index("--port") + 1] == "5001"


def test_ui_starts_mlflow_on_the_store_and_stops_on_ctrl_c(store):
    """Started as `mta-ablate ui &` from a script starts it, with SIGINT ignored (a shell without job control does
    that to background jobs, and Python then installs no Ctrl-C handler of its own): SIGINT still stops it."""
    uri, ids = store
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mta_ablate.cli", "ui", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ.copy(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 90
        while get(f"http://127.0.0.1:{port}/health")[0] != 200:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the MLflow UI did not answer within 90 s"
            time.sleep(0.5)
        status, body = get(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=kernels")
        assert status == 200 and json.loads(body)["experiment"]["name"] == "kernels"
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert f"MLflow UI: http://127.0.0.1:{port}" in output
    assert get(f"http://127.0.0.1:{port}/health")[0] == 0  # the server went away with it


def test_ui_optuna_without_the_package_is_one_clear_line(store, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec  # the dev install has the package: hide it, as on a machine without it
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna_dashboard" else real(name, *a)
    )
    assert main(["ui", "--optuna", "--storage", "sqlite:///x.db"]) == 1
    err = capsys.readouterr().err.strip()
    assert "pip install 'mta-ablate[dashboard]'" in err and len(err.splitlines()) == 1


def test_ui_bad_port_is_exit_2(store, capsys):
    assert main(["ui", "--port", "70000"]) == 2
    assert "--port=70000" in capsys.readouterr().err
