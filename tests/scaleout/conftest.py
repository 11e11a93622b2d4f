"""The scale-out topology on this machine's real services: PostgreSQL (127.0.0.1:5432, or PGHOST/PGPORT/PGUSER) and
`mlflow server` subprocesses on free loopback ports with PostgreSQL backend stores.

Every test gets its own databases (unique names, dropped afterwards, connections and all). Tests that need
PostgreSQL skip, saying why, when none answers; `.ci/run` starts this machine's cluster first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "postgres")


class Postgres:
    """Creates databases with unique names on the server and drops them all at teardown."""

    def __init__(self, psycopg):
        self._psycopg = psycopg
        self.created: list[str] = []

    def admin(self):
        return self._psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True, connect_timeout=3
        )

    def create(self, label: str) -> str:
        name = f"mta_test_{label}_{uuid.uuid4().hex[:8]}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return name

    def url(self, db: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"

    def connections(self, db: str) -> int:
        with self.admin() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,)).fetchone()[0]

    def drop_all(self) -> None:
        with self.admin() as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


def _postgres_or_skip() -> Postgres:
    psycopg = pytest.importorskip("psycopg", reason="psycopg 3 is not installed: pip install 'psycopg[binary]'")
    pg = Postgres(psycopg)
    try:
        pg.admin().close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {PG_USER}@{PG_HOST}:{PG_PORT} ({str(exc).strip()[:200]})")
    return pg


@pytest.fixture
def postgres():
    pg = _postgres_or_skip()
    yield pg
    pg.drop_all()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """`mlflow server` on a PostgreSQL database, artifacts proxied into a local folder; start, stop, start again."""

    def __init__(self, backend_uri: str, artifacts: Path, log: Path, allowed_hosts: str | None = None):
        self.backend_uri, self.artifacts, self.log_path = backend_uri, artifacts, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.allowed_hosts = allowed_hosts
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90) -> None:
        cmd = [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
        ]
        if self.allowed_hosts:
            cmd += ["--allowed-hosts", self.allowed_hosts]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        with open(self.log_path, "ab") as log:  # the server's output, shown when it fails
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """Stop the server and its uvicorn children (SIGTERM, SIGKILL after 3 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline:  # children may linger a moment after the parent
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""


def start_mlflow(pg: Postgres, folder: Path) -> MlflowServer:
    """An MLflow server on a new database of `pg`, with the compose file's --allowed-hosts plus its own address."""
    from tests.scaleout import compose

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artifacts").mkdir(exist_ok=True)
    server = MlflowServer(pg.url(pg.create("mlflow")), folder / "artifacts", folder / "mlflow.log")
    server.allowed_hosts = f"{compose.mlflow_allowed_hosts(compose.load())},127.0.0.1:{server.port}"
    server.start()
    return server


@pytest.fixture(scope="module")
def shared_mlflow(tmp_path_factory):
    """One MLflow server (own database) for the tests of a module that never stop it: starting one takes 10-30 s
    on 2 busy cores. Each test's sweep has its own name, hence its own experiment."""
    pg = _postgres_or_skip()
    server = start_mlflow(pg, tmp_path_factory.mktemp("mlflow"))
    yield server
    server.stop()
    pg.drop_all()


@pytest.fixture
def mlflow_server(postgres, tmp_path):
    """A running MLflow server of this test alone (own database); the test may `.stop()` and `.start()` it."""
    server = start_mlflow(postgres, tmp_path / "mlflow")
    yield server
    server.stop()
