"""`mta-ablate ui [--port P] [--host H] [--optuna [--optuna-port Q] [--storage URL | --sweep NAME]]`.

Starts `mlflow server` on the configured store (MLFLOW_TRACKING_URI, else the SQLite file MTA_HOME/mlflow.db with
artifacts under MTA_HOME/mlartifacts), prints its URL and runs until Ctrl-C. Sweeps appear as one experiment each,
a parent run with its trials nested under it; group by the tags `mta.arm` or `mta.seed` in the runs table.
`--optuna` also starts optuna-dashboard (a separate package) on the sweep's Optuna storage.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("ui", help="MLflow UI on the tracking store (and optuna-dashboard with --optuna)")
    p.add_argument("--port", type=int, default=5000, help="MLflow UI port (default 5000)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--optuna", action="store_true", help="also start optuna-dashboard on the sweep's storage")
    p.add_argument("--optuna-port", type=int, default=8080, help="optuna-dashboard port (default 8080)")
    p.add_argument("--storage", default=None, help="Optuna storage URL for --optuna (default: from --sweep)")
    p.add_argument("--sweep", default=None, help="sweep whose recorded storage --optuna opens (default: latest)")
    p.set_defaults(run=run)


def mlflow_command(uri: str, artifacts: str, host: str, port: int) -> list[str]:
    """The `mlflow server` command line for a database store; artifacts (a file URI) served by the server."""
    return [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", uri, "--artifacts-destination", artifacts),
        *("--host", host, "--port", str(port), "--workers", "1"),
    ]


def _check_port(port: int, flag: str) -> None:
    from mta_ablate.errors import ConfigError

    if not 1 <= port <= 65535:
        raise ConfigError(f"{flag}={port}: expected a TCP port between 1 and 65535")


def _sweep_storage(uri: str, sweep: str | None) -> str:
    """The Optuna storage URL recorded on a sweep's parent run (tag mta.storage): NAME's, else the latest sweep's."""
    from dashboards.load import KIND_SWEEP, TAG_KIND, TAG_STORAGE
    from mta_ablate.errors import ConfigError
    from mta_ablate.tracking.mlflow_store import client

    mlflow_client = client(uri)
    experiments = [e for e in mlflow_client.search_experiments() if sweep in (None, e.name)]
    if sweep and not experiments:
        raise ConfigError(f"--sweep={sweep!r}: no such sweep in {uri}")
    ids = [e.experiment_id for e in experiments]
    runs = (
        mlflow_client.search_runs(ids, f"tags.`{TAG_KIND}` = '{KIND_SWEEP}'", order_by=["start_time DESC"])
        if ids
        else []
    )
    for run in runs:
        if run.data.tags.get(TAG_STORAGE):
            return run.data.tags[TAG_STORAGE]
    raise ConfigError("--optuna: no sweep with a recorded Optuna storage (tag mta.storage); pass --storage URL")


def run(args) -> int:
    import importlib.util

    from mta_ablate.cli import console, err_console
    from mta_ablate.paths import mta_home
    from mta_ablate.tracking.mlflow_store import tracking_uri

    _check_port(args.port, "--port")
    _check_port(args.optuna_port, "--optuna-port")
    uri = tracking_uri()
    commands: list[tuple[str, list[str], str]] = []
    if uri.startswith(("http://", "https://", "databricks")):
        console.print(f"MLflow UI: {uri} (the tracking server already serves it)", highlight=False)
    else:
        artifacts = (mta_home() / "mlartifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        url = f"http://{args.host}:{args.port}"
        commands.append(("MLflow UI", mlflow_command(uri, artifacts.as_uri(), args.host, args.port), url))
    if args.optuna:
        if importlib.util.find_spec("optuna_dashboard") is None:
            err_console.print(
                "[red]error:[/red] --optuna needs the optuna-dashboard package: pip install optuna-dashboard",
                highlight=False,
            )
            return 1
        storage = args.storage or _sweep_storage(uri, args.sweep)
        cmd = [sys.executable, "-m", "optuna_dashboard", storage, "--host", args.host, "--port", str(args.optuna_port)]
        commands.append(("optuna-dashboard", cmd, f"http://{args.host}:{args.optuna_port}"))
    if not commands:
        return 0
    processes = []
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for name, cmd, url in commands:
            processes.append(subprocess.Popen(cmd, start_new_session=True))  # own group: stop it whole
            console.print(f"{name}: {url}  (store {uri if name == 'MLflow UI' else cmd[3]})", highlight=False)
        console.print("Ctrl-C stops.", highlight=False)
        while True:
            for (name, _, _), proc in zip(commands, processes, strict=False):
                if proc.poll() is not None:
                    err_console.print(f"[red]error:[/red] {name} exited with code {proc.returncode}", highlight=False)
                    return 1
            time.sleep(1.0)
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in processes:
            _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (its workers too), SIGKILL after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
