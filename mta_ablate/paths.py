"""Where the workspace and its caches live.

`MTA_HOME` (default `./mta-runs`, relative to the current directory) is the workspace root; downloads,
corpora token arrays and trained tokenizers live under `MTA_CACHE` (default `MTA_HOME/cache/`), which several
workspaces or hosts may share.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from mta_ablate.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=,+@:\[\]-]{0,199}")
"""Names that become folders under MTA_HOME (sweeps, arms, runs): no slashes, no leading dot, no spaces."""


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


def check_name(name: str, what: str) -> str:
    """A sweep, arm or run name that is safe as one folder name under MTA_HOME (it cannot climb out with `..`)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or ".." in name:
        if isinstance(name, str) and len(name) > 200:
            raise ConfigError(f"{what}: {len(name)} characters, too long; allowed: at most 200 ({name[:40]!r}...)")
        raise ConfigError(
            f"{what}={name!r}: not a safe name; allowed: letters, digits and . _ = , + @ : [ ] -, starting with a "
            "letter or digit (no slashes, spaces or '..'), at most 200 characters"
        )
    return name
