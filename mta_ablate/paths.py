"""Where the workspace and its caches live.

`MTA_HOME` (default `./mta-runs`, relative to the current directory) is the workspace root; downloads,
corpora token arrays and trained tokenizers live under `MTA_CACHE` (default `MTA_HOME/cache/`), which several
workspaces or hosts may share.
"""

from __future__ import annotations

import os
from pathlib import Path


def mta_home() -> Path:
    """The workspace root: `$MTA_HOME`, or `./mta-runs` when unset (not created here)."""
    return Path(os.environ.get("MTA_HOME") or "mta-runs").expanduser().absolute()


def cache_dir(*parts: str) -> Path:
    """`$MTA_CACHE/<parts...>` (default `MTA_HOME/cache/<parts...>`), created on demand."""
    root = (
        Path(os.environ["MTA_CACHE"]).expanduser().absolute() if os.environ.get("MTA_CACHE") else mta_home() / "cache"
    )
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
