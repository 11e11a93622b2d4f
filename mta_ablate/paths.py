"""Where the workspace and its caches live.

`MTA_HOME` (default `./mta-runs`, relative to the current directory) is the workspace root; downloads,
corpora token arrays and trained tokenizers live under `MTA_HOME/cache/`.
"""

from __future__ import annotations

import os
from pathlib import Path


def mta_home() -> Path:
    """The workspace root: `$MTA_HOME`, or `./mta-runs` when unset (not created here)."""
    return Path(os.environ.get("MTA_HOME") or "mta-runs").expanduser().absolute()


def cache_dir(*parts: str) -> Path:
    """`MTA_HOME/cache/<parts...>`, created on demand."""
    path = mta_home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
