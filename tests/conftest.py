"""Shared fixtures: every test gets its own workspace (MTA_HOME) and its own MLflow store, both real."""

import os
import shutil

import pytest


def pytest_runtest_setup(item):
    if item.get_closest_marker("slow") and os.environ.get("MTA_SLOW") != "1":
        pytest.skip("slow test: run with MTA_SLOW=1 (make test-all)")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A fresh MTA_HOME with the embedded stores (SQLite MLflow file, local artifacts) inside tmp_path; the corpora
    cache stays the one `make data` filled (MTA_CACHE)."""
    from mta_ablate.paths import cache_dir

    monkeypatch.setenv("MTA_CACHE", str(cache_dir()))
    home = tmp_path / "mta-home"
    monkeypatch.setenv("MTA_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return home


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory):
    """An empty MLflow SQLite store, created (its schema migrated) by MLflow once per test session."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracked_workspace(workspace, mlflow_template):
    """`workspace` with its MLflow store already in place, as the first run there would leave it (a copy of the
    session's empty store: MLflow takes seconds to create one). For tests that train; bad-input tests, which check
    that nothing is created, use `workspace`."""
    workspace.mkdir(parents=True)
    shutil.copy(mlflow_template, workspace / "mlflow.db")
    return workspace
