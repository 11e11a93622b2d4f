"""The `mta-ablate` command line: parse, dispatch one subcommand, turn bad input into exit code 2.

    mta-ablate bench attention [--json]
    mta-ablate data info | fetch | sample ...

Each subcommand lives in `mta_ablate/commands/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`; heavy imports (torch, lightning, mlflow) happen inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from mta_ablate.errors import ConfigError

console = Console(stderr=False)
err_console = Console(stderr=True)

COMMANDS = ("bench", "data")


class _Parser(argparse.ArgumentParser):
    """argparse that exits 2 with one line naming what is wrong (argparse's own convention)."""

    def error(self, message: str):  # noqa: D401
        err_console.print(f"[red]error:[/red] {message}  (see `{self.prog} --help`)", highlight=False)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mta-ablate", description="Ablations of Multi-Token Attention variants.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"mta_ablate.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
