"""Stores and workspaces that are not what they claim: one line naming the file and what to do, exit 2, before any
work, and nothing created or changed. And a first store creation that a Ctrl-C cannot leave half-done."""

import os
import shutil
import sqlite3

import pytest

from mta_ablate.cli import main
from tests.cli import cli

Q = "sweeps/quickstart.yaml"


@pytest.fixture(scope="module")
def optuna_db(tmp_path_factory):
    """A real Optuna storage holding one study."""
    import optuna

    path = tmp_path_factory.mktemp("optuna") / "optuna.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{path}")
    return path


def _run(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    return err


def test_a_storage_that_is_a_text_file_is_named(workspace, tmp_path, capsys):
    text = tmp_path / "notes.db"
    text.write_text("just some notes\n" * 10)
    err = _run(["status", "s", "--storage", f"sqlite:///{text}"], capsys)
    assert "is not a SQLite database" in err
    assert text.read_text() == "just some notes\n" * 10


def test_a_truncated_optuna_db_is_named_by_status_and_sweep(workspace, tmp_path, optuna_db, capsys):
    broken = tmp_path / "optuna.db"
    data = optuna_db.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    assert "is damaged" in _run(["status", "s", "--storage", f"sqlite:///{broken}"], capsys)
    assert "is damaged" in _run(["sweep", Q, "--storage", f"sqlite:///{broken}"], capsys)
    assert broken.stat().st_size == len(data) // 2


def test_an_mlflow_store_given_as_the_optuna_storage_is_named(tracked_workspace, capsys):
    err = _run(["status", "s", "--storage", f"sqlite:///{tracked_workspace / 'mlflow.db'}"], capsys)
    assert "is not an Optuna storage (it is an MLflow tracking store)" in err


def test_a_truncated_mlflow_db_is_named_by_report(tracked_workspace, capsys):
    store = tracked_workspace / "mlflow.db"
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 3])
    (tracked_workspace / "optuna.db").write_bytes(b"")
    assert "is damaged" in _run(["report", "x"], capsys)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_mlflow_db_is_named_before_training(tracked_workspace, capsys):
    store = tracked_workspace / "mlflow.db"
    store.chmod(0o444)
    assert "is read-only" in _run(["train", "model=toy", "task=find_block"], capsys)


def test_a_read_only_mlflow_db_is_named_before_training_even_for_root(tracked_workspace, capsys, monkeypatch):
    """As root the permission bits do not stop a write, so the check is shown through `os.access`, which they do."""
    store = tracked_workspace / "mlflow.db"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(store) else real(p, mode))
    assert "is read-only" in _run(["train", "model=toy", "task=find_block"], capsys)


@pytest.mark.parametrize("folder", ["checkpoints", "logs", "mlartifacts"])
def test_a_workspace_folder_that_is_a_file_is_named_before_anything_is_created(workspace, folder, capsys):
    workspace.mkdir()
    (workspace / folder).write_text("not a folder")
    err = _run(["sweep", Q, "--workers", "1"], capsys)
    assert f"{folder} is a file" in err
    assert sorted(p.name for p in workspace.iterdir()) == [folder]


def test_a_ctrl_c_while_the_first_store_is_created_leaves_no_store(workspace, monkeypatch):
    from mlflow.tracking import MlflowClient

    from mta_ablate.tracking import mlflow_store

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(MlflowClient, "search_experiments", interrupted)
        with pytest.raises(KeyboardInterrupt):
            mlflow_store.client()
    assert not (workspace / "mlflow.db").exists()
    assert [p.name for p in workspace.iterdir()] == []  # no temporary file left either
    assert mlflow_store.client().search_experiments()  # the next command creates it whole


def test_a_store_half_created_by_an_earlier_interruption_is_set_aside_and_created_again(workspace, mlflow_template):
    from mta_ablate.tracking import mlflow_store

    workspace.mkdir()
    half = workspace / "mlflow.db"
    shutil.copy(mlflow_template, half)
    with sqlite3.connect(half) as db:  # what an interrupted alembic batch migration leaves behind
        db.execute("CREATE TABLE _alembic_tmp_model_versions (name TEXT)")
    done = cli("train", "model=toy", "task=find_block", "train.max_steps=1", "--show-config")
    assert done.returncode == 0, done.stderr
    assert mlflow_store.client().search_experiments()
    assert (workspace / "mlflow.db.half-created").exists()
    with sqlite3.connect(half) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any(n.startswith("_alembic_tmp_") for n in names)


def test_two_sweep_commands_on_one_new_name_create_it_once(workspace, tmp_path):
    """Started together, the second waits for the first to create the sweep, then resumes it (its workers would join):
    one study, one parent run, every trial queued once."""
    import subprocess
    import sys

    import optuna
    from mlflow.tracking import MlflowClient

    cmd = [sys.executable, "-m", "mta_ablate", "sweep", Q, "--workers", "0"]
    env = {**os.environ, "MTA_HOME": str(workspace)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{workspace / 'optuna.db'}")
    slots = [(t.user_attrs.get("arm"), t.user_attrs.get("seed")) for t in study.trials]
    assert len(slots) == len(set(slots)) == 9, slots  # 3 arms x 3 initial seeds, none twice
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("quickstart").experiment_id
    assert len(client.search_runs([experiment])) == 1  # the parent run; no trial has run


def test_a_missing_corpus_folder_creates_nothing_in_the_corpus_cache(workspace, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MTA_CACHE", str(tmp_path / "cache"))
    err = _run(["train", "model=toy", "task=lm", "task.corpora=[dir:/nonexistent]"], capsys)
    assert "/nonexistent is not a directory" in err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_sweeps_in_a_new_workspace_says_none_yet_and_exits_0(workspace):
    done = cli("sweeps")
    assert done.returncode == 0 and "no sweeps yet" in done.stdout, done.stderr
    assert not workspace.exists() or not any(workspace.iterdir())


def test_delete_with_stdin_closed_deletes_nothing(workspace, monkeypatch, optuna_db):
    import io

    workspace.mkdir()
    shutil.copy(optuna_db, workspace / "optuna.db")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # at EOF, as in a script or CI
    done = cli("delete", "s")
    assert done.returncode != 0 and "Traceback" not in done.stderr + done.stdout
    import optuna

    assert optuna.load_study(study_name="s", storage=f"sqlite:///{workspace / 'optuna.db'}")


def test_ui_on_a_taken_port_is_one_line_before_anything_starts(tracked_workspace, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        err = _run(["ui", "--port", str(port)], capsys)
    assert f"--port={port}: the port is taken" in err


@pytest.mark.parametrize(("revision", "expected"), [("v3.0.0.a", "older Optuna"), ("v9.9.9.z", "newer Optuna")])
def test_an_optuna_db_of_another_schema_version_is_named_with_what_to_do(workspace, tmp_path, optuna_db, capsys,
                                                                         revision, expected):  # fmt: skip
    other = tmp_path / "optuna.db"
    shutil.copy(optuna_db, other)
    with sqlite3.connect(other) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    err = _run(["status", "s", "--storage", f"sqlite:///{other}"], capsys)
    assert expected in err and revision in err
    assert ("optuna storage upgrade" in err) == (expected == "older Optuna")


def test_an_mlflow_store_of_an_older_schema_is_named_before_training(tracked_workspace, capsys):
    with sqlite3.connect(tracked_workspace / "mlflow.db") as db:
        db.execute("UPDATE alembic_version SET version_num = '0584bdc529eb'")  # an early MLflow revision
    err = _run(["train", "model=toy", "task=find_block"], capsys)
    assert "older MLflow" in err and "mlflow db upgrade" in err
