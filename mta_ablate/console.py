"""Where the command line writes: tables to stdout, errors and log lines to stderr, through rich."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get wide tables
err_console = Console(stderr=True, soft_wrap=True)  # errors stay on one line
