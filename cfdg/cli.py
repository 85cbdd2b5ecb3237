"""The `cfdg` command. Subcommands live in `cfdg/commands/<name>.py`, each with `register(sub)`.

Discovery keeps this file free of per-feature edits: a new command is a new module.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from cfdg import __version__, commands
from cfdg.errors import CfdgError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfdg", description="Classifier-Free Diffusion Generation for offline-to-online RL."
    )
    parser.add_argument("--version", action="version", version=f"cfdg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"cfdg.commands.{mod.name}").register(sub)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Run the chosen subcommand; a CfdgError becomes one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CfdgError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
