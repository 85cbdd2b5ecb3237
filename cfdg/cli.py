"""The library's commands: `dataset`, `store`, `agent`, `quality`, and the dispatcher they share.

These work on files (stores, checkpoints) and know nothing of the pipeline. The user's `cfdg`
command (pipeline/cli.py) adds `run`, `round`, `serve`, ... on top; `python -m cfdg` offers the
library commands alone.
"""

from __future__ import annotations

import argparse
import sys

from cfdg import __version__
from cfdg.commands import agent, dataset, quality, store
from cfdg.errors import CfdgError, one_line

DESCRIPTION = "Classifier-Free Diffusion Generation for offline-to-online RL."


def add_library_commands(sub: argparse._SubParsersAction) -> None:
    """Register the library's sub-commands on `sub` (each module's `register`)."""
    for module in (agent, dataset, quality, store):
        module.register(sub)


def new_parser(prog: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A parser with `--version` and an empty, required set of sub-commands."""
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cfdg {__version__}")
    return parser, parser.add_subparsers(dest="command", required=True)


def build_parser() -> argparse.ArgumentParser:
    parser, sub = new_parser("cfdg")
    add_library_commands(sub)
    return parser


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Run the chosen subcommand; a CfdgError becomes one line on stderr and exit code 2."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CfdgError as e:
        print(f"{parser.prog}: error: {one_line(e)}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
