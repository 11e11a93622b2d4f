"""The `mta-ablate` command line: parse, dispatch one subcommand, turn bad input into exit code 2.

    mta-ablate train [group=option ...] [key=value ...]
    mta-ablate bench attention [--json]
    mta-ablate data info | fetch | sample ...

Each subcommand lives in `mta_ablate/commands/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`; heavy imports (torch, lightning, mlflow) happen inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from rich.console import Console
from rich.markup import escape

from mta_ablate.errors import ConfigError

console = Console(width=None if sys.stdout.isatty() else 150)  # logs and pipes get wide tables
err_console = Console(stderr=True, soft_wrap=True)  # errors stay on one line

COMMANDS = ("train", "sweep", "worker", "status", "sweeps", "report", "compare", "delete", "ui", "bench", "data")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line naming what is wrong (argparse's own convention)."""

    def error(self, message: str):  # noqa: D401
        err_console.print(f"[red]error:[/red] {escape(message)}  (see `{self.prog} --help`)", highlight=False)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from mta_ablate import __version__

    parser = _Parser(prog="mta-ablate", description="Ablations of Multi-Token Attention variants.")
    parser.add_argument("--version", action="version", version=f"mta-ablate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"mta_ablate.commands.{name}").add_parser(sub)
    return parser


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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars in logs are noise
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and not any(x.startswith("-") for x in extra):
        args.overrides = [*args.overrides, *extra]  # `sweep FILE --workers 2 key=value`: overrides after options
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, SIGINT or SIGTERM: what ran is recorded as interrupted; no traceback
        err_console.print("interrupted; the same command resumes", highlight=False)
        return 130


if __name__ == "__main__":
    sys.exit(main())
