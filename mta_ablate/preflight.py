"""Checks of the places a command will read or write, before any work starts and before anything is stored.

    check_workspace()                     # MTA_HOME is a folder we can write (or can be created)
    check_storage(url, read_only=False)   # an Optuna RDB storage: URL, driver, folder or server reachable
    check_tracking(uri, read_only=False)  # an MLflow tracking URI: scheme, folder or server reachable

Each raises ConfigError with one line naming what is wrong and what is allowed; a URL is always shown redacted (no
password). A read-only check (`status`, `report`) also fails when an embedded store does not exist yet, so that a
read-only command never creates one. No torch, no Optuna, no MLflow here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

from mta_ablate.errors import ConfigError
from mta_ablate.paths import mta_home

NOT_A_PLACE = ("/proc", "/sys", "/dev")
STORAGE_FORMS = "sqlite:///PATH, postgresql+psycopg://USER@HOST:PORT/DB or mysql+pymysql://..."
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "databricks")


def redact(url: str) -> str:
    """A URL without its password: `user:pw@`, `:pw@` and `?password=pw` forms."""
    url = re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&](?:password|passwd|pwd)=)[^&#]*", r"\1***", url)


def _writable_folder(folder: Path, what: str) -> None:
    if any(str(folder) == p or str(folder).startswith(p + "/") for p in NOT_A_PLACE):
        raise ConfigError(f"{what}: {folder} is a kernel filesystem, not a place for files; choose a normal folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{what}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{what}: {existing} is not writable by this user; choose a folder you can write")


def check_workspace() -> Path:
    """MTA_HOME (default ./mta-runs) must be a writable folder, or creatable; nothing is created here."""
    home = mta_home()
    if home.exists() and not home.is_dir():
        raise ConfigError(f"MTA_HOME={home}: is a file; expected a folder for the workspace (stores, checkpoints)")
    _writable_folder(home, f"MTA_HOME={home}")
    for name in WORKSPACE_FOLDERS:
        sub = home / name
        if sub.exists() and not sub.is_dir():
            raise ConfigError(f"MTA_HOME={home}: {sub} is a file, where the workspace keeps its {name} folder; move it")
    return home


SQLITE_HEADER = b"SQLite format 3\x00"
STORE_TABLES = {"optuna": ("studies", "version_info"), "mlflow": ("experiments", "runs", "alembic_version")}
"""Tables a store of each kind has once created: how a database file shows what it is."""
WORKSPACE_FOLDERS = ("checkpoints", "logs", "mlartifacts", "cache")


def sqlite_problem(path: Path, kind: str) -> str | None:
    """What is wrong with an existing SQLite file as a store of `kind` ("optuna" or "mlflow"), or None: not SQLite,
    truncated, unreadable, of the other kind, or half-created by an interrupted first run."""
    size = path.stat().st_size
    if size == 0:
        return None  # an empty file is an empty database: the store is created in it
    with open(path, "rb") as f:
        header = f.read(100)
    if not header.startswith(SQLITE_HEADER):
        return "is not a SQLite database (its first bytes are not SQLite's); point at a store file, or move it away"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages, valid = int.from_bytes(header[28:32], "big"), header[24:28] == header[92:96]
    if len(header) < 100 or (valid and pages * page_size > size):
        expected = pages * page_size
        return f"is damaged: truncated at {size:,} of {expected:,} bytes; restore it from a copy, or move it away"
    try:  # a store another process is writing is waited for (busy timeout), not called damaged
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return None
        return f"is damaged ({err}); restore it from a copy, or move it away"
    except sqlite3.DatabaseError as err:
        return f"is damaged ({err}); restore it from a copy, or move it away"
    if any(t.startswith("_alembic_tmp_") for t in tables):
        return "was left half-created by an interrupted first run"
    other = "mlflow" if kind == "optuna" else "optuna"
    if tables and not set(STORE_TABLES[kind]) <= tables:
        what = {"optuna": "an Optuna storage", "mlflow": "an MLflow tracking store"}
        held = f" (it is {what[other]})" if set(STORE_TABLES[other]) <= tables else ""
        return f"is not {what[kind]}{held}; point at the right file"
    return _schema_problem(path, kind) if tables else None


MIGRATIONS = {
    "optuna": ("optuna", "storages/_rdb/alembic/versions"),
    "mlflow": ("mlflow", "store/db_migrations/versions"),
}
UPGRADE = {
    "optuna": "optuna storage upgrade --storage sqlite:///{path}",
    "mlflow": "mlflow db upgrade sqlite:///{path}",
}


def schema_revisions(kind: str) -> tuple[set[str], set[str]]:
    """(every schema revision the installed Optuna or MLflow knows, its head revisions), read from its migration
    scripts' `revision` / `down_revision` lines (without importing the package)."""
    package, folder = MIGRATIONS[kind]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return set(), set()
    known, parents = set(), set()
    for script in (Path(spec.origin).parent / folder).glob("*.py"):
        text = script.read_text(errors="replace")
        known.update(re.findall(r"^revision\s*=\s*['\"]([^'\"]+)", text, re.M))
        parents.update(re.findall(r"['\"]([^'\"]+)['\"]", "".join(re.findall(r"^down_revision\s*=.*$", text, re.M))))
    return known, known - parents


def _schema_problem(path: Path, kind: str) -> str | None:
    """A store written by another version of Optuna or MLflow than the installed one: say which way, and how to
    upgrade (a newer store needs a newer package; an older one, the package's upgrade command)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
        try:
            stored = {row[0] for row in db.execute("SELECT version_num FROM alembic_version")}
        except sqlite3.DatabaseError:
            return None
    known, heads = schema_revisions(kind)
    if not heads or not stored or stored <= heads:
        return None
    package = {"optuna": "Optuna", "mlflow": "MLflow"}[kind]
    revision = ", ".join(sorted(stored))
    if stored <= known:
        command = UPGRADE[kind].format(path=path)
        return f"was written by an older {package} (schema {revision}); back it up, then upgrade it: {command}"
    return f"was written by a newer {package} (schema {revision}) than the one installed here; install that version"


def _sqlite_file(database: str | None, what: str, read_only: bool, kind: str = "optuna") -> None:
    if not database or database == ":memory:":
        raise ConfigError(f"{what}: a SQLite store needs a file path (sqlite:////abs/path.db)")
    path = Path(database).expanduser().absolute()
    if read_only and not path.is_file():
        raise ConfigError(f"{what}: no store at {path} (nothing has been run into it yet)")
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a folder, not a database file")
    if path.is_file():
        problem = sqlite_problem(path, kind)
        if problem == "was left half-created by an interrupted first run" and kind == "mlflow" and not read_only:
            problem = None  # `mlflow_store.client` sets it aside and creates the store again
        if problem:
            raise ConfigError(f"{what}: {path} {problem}")
        if not read_only and not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{what}: {path} is read-only for this user, and this command writes to it")
    _writable_folder(path.parent, what)
    if not path.parent.is_dir() and path.parent != mta_home():  # SQLite creates the file, never its folder
        raise ConfigError(f"{what}: the folder {path.parent} does not exist; create it, or choose another path")


def check_storage(url: str, read_only: bool = False, option: str = "--storage") -> None:
    """An Optuna storage URL that names a reachable RDB: SQLite (its folder), PostgreSQL or MySQL (a connection)."""
    from sqlalchemy import create_engine, exc
    from sqlalchemy.engine import make_url

    what = f"{option}={redact(url)}"
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        raise ConfigError(f"{what}: not a database URL; expected {STORAGE_FORMS}") from None
    except ValueError:  # sqlalchemy reads the port as an integer
        raise ConfigError(f"{what}: the port is not a number; expected {STORAGE_FORMS}") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"{what}: {backend!r} is not a supported storage; expected {STORAGE_FORMS}")
    if backend == "sqlite":
        _sqlite_file(parsed.database, what, read_only)
        return
    try:
        parsed.get_dialect()
    except (ImportError, exc.NoSuchModuleError) as err:
        driver = {"postgresql": "psycopg[binary]", "mysql": "pymysql"}[backend]
        raise ConfigError(f"{what}: its database driver is not installed ({err}); pip install {driver}") from None
    timeout = {"postgresql": {"connect_timeout": 5}, "mysql": {"connect_timeout": 5}}[backend]
    try:
        engine = create_engine(parsed, connect_args=timeout)
        with engine.connect():
            pass
        engine.dispose()
    except ImportError as err:
        raise ConfigError(f"{what}: its database driver is not installed ({err}); install it with pip") from None
    except Exception as err:  # refused, unknown host, bad password, missing database: one line, no password
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()
        raise ConfigError(f"{what}: cannot connect: {redact(reason[0] if reason else type(err).__name__)}") from None


def check_tracking(uri: str | None, read_only: bool = False) -> None:
    """An MLflow tracking URI (None: MLFLOW_TRACKING_URI, else MTA_HOME/mlflow.db) that can be used now."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # the embedded store
        _sqlite_file(str(mta_home() / "mlflow.db"), "tracking store", read_only, kind="mlflow")
        return
    what = f"--tracking-uri={redact(uri)}"
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else "file"
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(f"{what}: unknown scheme {scheme!r}; allowed: {', '.join(TRACKING_SCHEMES)}")
    if scheme == "sqlite":
        _sqlite_file(uri.split(":///", 1)[-1] if ":///" in uri else "", what, read_only, kind="mlflow")
    elif scheme == "file" or ":" not in uri:
        folder = Path(uri.removeprefix("file://") if uri.startswith("file:") else uri).expanduser().absolute()
        if read_only and not folder.is_dir():
            raise ConfigError(f"{what}: no store at {folder}")
        _writable_folder(folder, what)
    elif scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
                response.read(64)
        except (urllib.error.URLError, OSError, ValueError) as err:
            raise ConfigError(f"{what}: the MLflow server does not answer ({getattr(err, 'reason', err)})") from None
    elif scheme in ("postgresql", "mysql"):
        check_storage(uri, option="--tracking-uri")
