"""Shared fixtures: every test gets its own workspace (MTA_HOME) and its own MLflow store, both real."""

import os

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
