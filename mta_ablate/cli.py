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
import os
import sys

from rich.markup import escape

from mta_ablate.console import err_console
from mta_ablate.errors import ConfigError
from mta_ablate.machine import keep_freed_memory

COMMANDS = ("train", "plan", "sweep", "worker", "status", "sweeps", "report", "compare", "delete", "ui", "bench")
COMMANDS += ("data",)


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


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # progress bars in logs are noise
    keep_freed_memory()  # training steps reuse their maps' memory instead of faulting in fresh pages
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
