"""The command-line runner every stage shares: `python -m stages.<name> [--round k]`.

It honours the testing hooks `CFDG_FAIL_STAGE` (fail on start) and `CFDG_KILL_AT` (SIGKILL at a
named point, cfdg.io.kill_point), turns a CfdgError into one stderr line and exit
code 2, and leaves no half-written output behind (the library writes atomically).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from cfdg.errors import CfdgError, one_line
from cfdg.io import STAGE_ENV, kill_point

# Testing hook: a comma-separated list of stage ids (`fit@2`, `pretrain`) that fail on start,
# as a crash would, so tests and users can rehearse a failed round and its retry.
FAIL_ENV = "CFDG_FAIL_STAGE"
# Progress bars: on when stderr is a terminal, or forced with CFDG_PROGRESS=1 / 0.
PROGRESS_ENV = "CFDG_PROGRESS"


class InjectedFailure(CfdgError):
    """Raised when CFDG_FAIL_STAGE names the running stage."""


def stage_id(name: str, k: int | None = None) -> str:
    return name if k is None else f"{name}@{k}"


def fail_if_injected(stage: str) -> None:
    wanted = {s.strip() for s in os.environ.get(FAIL_ENV, "").split(",") if s.strip()}
    if stage in wanted:
        raise InjectedFailure(f"{stage}: failing on purpose because {FAIL_ENV}={os.environ[FAIL_ENV]!r}")


def progress_enabled() -> bool:
    value = os.environ.get(PROGRESS_ENV)
    if value is not None:
        return value.strip().lower() not in ("", "0", "false", "no")
    return sys.stderr.isatty()


def run_main(
    name: str, body: Callable[[argparse.Namespace], Any], argv: list[str] | None = None, rounds: bool = False
) -> int:
    """Parse `--params` (and `--round k`), check the failure hook, run `body(args)`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"cfdg pipeline stage '{name}'")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    if rounds:
        parser.add_argument("--round", type=int, required=True, help="round number k >= 1")
    args = parser.parse_args(argv)
    sid = stage_id(name, getattr(args, "round", None))
    os.environ[STAGE_ENV] = sid  # for the kill hook (cfdg.io.kill_point) deep in the library
    try:
        fail_if_injected(sid)
        kill_point("start")
        body(args)
        kill_point("end")
    except CfdgError as e:
        print(f"stage {sid}: error: {one_line(e)}", file=sys.stderr)
        return 2
    return 0
