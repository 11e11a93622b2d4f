"""`creation_lock(url, name)`: one process at a time creates or resumes a sweep in a storage."""

from __future__ import annotations

import contextlib
import fcntl
import zlib

from sqlalchemy.engine import make_url


@contextlib.contextmanager
def creation_lock(url: str, name: str):
    """One process at a time creates or resumes a sweep in a storage, so that two commands started together on one
    new name do not both create it: the second waits, then finds it and resumes it (its workers join). SQLite: a file
    lock beside the database; PostgreSQL: an advisory lock; other storages: none."""
    database = make_url(url).database if url.startswith("sqlite:") else None
    if database and database != ":memory:":
        with open(database + ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif url.startswith("postgresql"):
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        key = zlib.crc32(f"mta-ablate sweep {name}".encode())
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        finally:
            engine.dispose()
    else:  # an in-memory SQLite storage, MySQL: no lock
        yield
