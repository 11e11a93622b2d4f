"""`mta-ablate ui [--port P] [--host H] [--sweep NAME] [--optuna [--optuna-port Q] [--storage URL]]`.

Starts `mlflow server` on the configured store (MLFLOW_TRACKING_URI, else the SQLite file MTA_HOME/mlflow.db with
artifacts under MTA_HOME/mlartifacts), prints its URL and one link per sweep, and runs until Ctrl-C. A sweep's link
opens its runs table in a saved view: the parent run expanded, its trials grouped by arm (tag `mta.arm`, averaged
over seeds; click a group to see its seeds), with arm, seed, state, the objective and the cost columns shown.
`--optuna` also starts optuna-dashboard (`pip install 'mta-ablate[dashboard]'`) on the sweep's Optuna storage.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from mta_ablate.console import console, err_console
from mta_ablate.errors import ConfigError
from mta_ablate.paths import mta_home
from mta_ablate.preflight import redact


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ui",
        help="MLflow UI on the tracking store (and optuna-dashboard with --optuna)",
        description="Starts the MLflow UI on the tracking store and prints one link per sweep. The link opens the "
        "sweep's runs in the 'Model training' view, grouped by arm (averaged over seeds): click a group's arrow for "
        "its seeds, a run for its curves and artifacts. --optuna also starts optuna-dashboard on the sweep's "
        "Optuna storage (pip install 'mta-ablate[dashboard]').",
    )
    p.add_argument("--port", type=int, default=5000, help="MLflow UI port (default 5000)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--optuna", action="store_true", help="also start optuna-dashboard on the sweep's storage")
    p.add_argument("--optuna-port", type=int, default=8080, help="optuna-dashboard port (default 8080)")
    p.add_argument("--storage", default=None, help="Optuna storage URL for --optuna (default: from --sweep)")
    p.add_argument(
        "--sweep", default=None, help="print only this sweep's link; its recorded storage is what --optuna opens"
    )
    p.set_defaults(run=run)


def mlflow_command(uri: str, artifacts: str, host: str, port: int) -> list[str]:
    """The `mlflow server` command line for a database store; artifacts (a file URI) served by the server."""
    return [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", uri, "--artifacts-destination", artifacts),
        *("--host", host, "--port", str(port), "--workers", "1"),
    ]


def _check_port(port: int, flag: str) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{flag}={port}: expected a TCP port between 1 and 65535")


def _check_free(port: int, flag: str) -> None:
    """Fail now, in one line, when a server already listens on the port we would start one on."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"{flag}={port}: the port is taken (another UI or server listens there); choose another, e.g. "
                f"{flag} {port + 1}"
            ) from None


def _sweep_storage(uri: str, sweep: str | None) -> str:
    """The Optuna storage URL recorded on a sweep's parent run (tag mta.storage): NAME's, else the latest sweep's."""
    from mta_ablate.tracking.mlflow_store import KIND_SWEEP, TAG_KIND, TAG_STORAGE, client

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


def sweep_links(uri: str, base_url: str, only: str | None = None) -> list[tuple[str, str]]:
    """(sweep, link to its saved runs view) for every sweep in the store (experiments with a sweep parent run)."""
    from mta_ablate.tracking.mlflow_store import KIND_SWEEP, TAG_KIND, client, sweep_view_url

    mlflow_client = client(uri)
    out = []
    for experiment in mlflow_client.search_experiments():
        if only not in (None, experiment.name):
            continue
        if mlflow_client.search_runs([experiment.experiment_id], f"tags.`{TAG_KIND}` = '{KIND_SWEEP}'", max_results=1):
            out.append((experiment.name, sweep_view_url(base_url, experiment.experiment_id)))
    return out


def run(args) -> int:
    from mta_ablate.tracking.mlflow_store import tracking_uri

    _check_port(args.port, "--port")
    _check_port(args.optuna_port, "--optuna-port")
    if args.optuna:
        _check_free(args.optuna_port, "--optuna-port")
    uri = tracking_uri()
    commands: list[tuple[str, list[str], str]] = []
    if uri.startswith(("http://", "https://", "databricks")):
        console.print(f"MLflow UI: {uri} (the tracking server already serves it)", highlight=False)
    else:
        _check_free(args.port, "--port")
        artifacts = (mta_home() / "mlartifacts").resolve()
        artifacts.mkdir(parents=True, exist_ok=True)
        url = f"http://{args.host}:{args.port}"
        commands.append(("MLflow UI", mlflow_command(uri, artifacts.as_uri(), args.host, args.port), url))
    if args.optuna:
        dashboard = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which(
            "optuna-dashboard"
        )
        if importlib.util.find_spec("optuna_dashboard") is None or dashboard is None:
            err_console.print(
                "[red]error:[/red] --optuna needs the optuna-dashboard package: pip install 'mta-ablate\\[dashboard]'",
                highlight=False,
            )
            return 1
        storage = args.storage or _sweep_storage(uri, args.sweep)
        cmd = [dashboard, storage, "--host", args.host, "--port", str(args.optuna_port)]
        commands.append(("optuna-dashboard", cmd, f"http://{args.host}:{args.optuna_port}"))
    if not commands:
        return 0
    processes = []
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C or SIGTERM stops the servers, whatever an import installed
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        for name, cmd, url in commands:
            processes.append(subprocess.Popen(cmd, start_new_session=True))  # own group: stop it whole
            console.print(f"{name}: {url}  (store {redact(uri if name == 'MLflow UI' else cmd[1])})", highlight=False)
        if not uri.startswith(("http://", "https://", "databricks")):
            for name, link in sweep_links(uri, f"http://{args.host}:{args.port}", args.sweep):
                console.print(f"  sweep {name}: {link}", highlight=False)
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
        _stop(processes)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every server's process group (their workers too) at once, SIGKILL to those left after 10 s."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        running = [p for p in processes if p.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + wait
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
