"""Log lines of a command that trains or runs a sweep: mta_ablate's through rich, and Lightning's, MLflow's and
Optuna's own info lines quieted (they set their loggers up when imported, so this imports them, after the handler
exists: Lightning adds a handler of its own when the root logger has none)."""

from __future__ import annotations

import logging
import warnings

from rich.logging import RichHandler

from mta_ablate.console import err_console


def setup_logging(level: int = logging.INFO) -> None:
    """Log lines of mta_ablate through rich; Lightning's own info lines stay quiet unless they warn."""
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=logging.WARNING, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("mta_ablate").setLevel(level)
    import lightning.pytorch  # noqa: F401  (these set their loggers up on import; quiet them afterwards)
    import mlflow  # noqa: F401
    import optuna

    for name in ("lightning.pytorch", "lightning.fabric", "mlflow"):  # their info lines (GPU, tips, DB setup) are noise
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats, retry callback
    optuna.logging.set_verbosity(optuna.logging.WARNING)
