"""Where the command line writes: tables to stdout, errors and log lines to stderr, through rich."""

from __future__ import annotations

import logging
import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get wide tables
err_console = Console(stderr=True, soft_wrap=True)  # errors stay on one line


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines of mta_ablate through rich; Lightning's own info lines stay quiet unless they warn."""
    from rich.logging import RichHandler

    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("mta_ablate").setLevel(level)
    import warnings

    import lightning.pytorch  # noqa: F401  (these set their loggers up on import; quiet them afterwards)
    import mlflow  # noqa: F401

    for name in ("lightning.pytorch", "lightning.fabric", "mlflow"):  # their info lines (GPU, tips, DB setup) are noise
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retry callback
    optuna.logging.set_verbosity(optuna.logging.WARNING)
