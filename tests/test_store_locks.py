"""Two workers writing one SQLite MLflow store at the same moment (both ending their runs on Ctrl-C): a write that
finds the store locked is tried again, and a failure MLflow cannot record never replaces the failure itself."""

import sqlite3
import threading

import pytest

from mta_ablate.tracking import mlflow_store as store


def test_a_write_refused_by_a_held_lock_goes_through_once_the_lock_is_released(tmp_path):
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE tags (key TEXT, value TEXT)")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")  # another process's write transaction

    def write():
        with sqlite3.connect(path, timeout=0) as db:  # no busy wait: SQLite's answer to a deadlock-prone upgrade
            db.execute("INSERT INTO tags VALUES ('mta.state', 'failed')")

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        write()
    threading.Timer(0.3, holder.execute, ["COMMIT"]).start()
    store.retried(write)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM tags").fetchone() == (1,)
    holder.close()


def test_other_errors_are_not_retried(tmp_path):
    calls = []

    def broken():
        calls.append(1)
        with sqlite3.connect(tmp_path / "x.db") as db:
            db.execute("SELECT * FROM missing")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store.retried(broken)
    assert len(calls) == 1


def test_an_interruption_propagates_when_mlflow_cannot_record_it(workspace):
    client = store.client()
    refused = store.recorded(client, "0" * 32)  # a run the store does not hold: every record of it is refused
    with pytest.raises(KeyboardInterrupt, match="training was interrupted"), refused:
        raise KeyboardInterrupt("training was interrupted")
