"""The command-line runner every stage shares: `python -m stages.<name> [--round k]`.

It honours the testing hooks `CFDG_FAIL_STAGE` (fail on start) and `CFDG_KILL_AT` (SIGKILL at a
named point, cfdg.io.kill_point), and leaves no half-written output behind (the library writes
atomically). Every failure starts with one stderr line that the pipeline reads (pipeline/faults.py):

    stage fit@2: error: <message>               a bad input (CfdgError); exit code 2
    stage fit@2: fault: <kind>: <message>       then the traceback; exit code 3 (a fault of the
                                                machine: no-space, permission, read-only) or 1 (crash)
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cfdg.errors import CfdgError, one_line
from cfdg.io import STAGE_ENV, kill_point

# Testing hook: a comma-separated list of stage ids (`fit@2`, `pretrain`) that fail on start,
# as a crash would, so tests and users can rehearse a failed round and its retry.
FAIL_ENV = "CFDG_FAIL_STAGE"
# Progress bars: on when stderr is a terminal, or forced with CFDG_PROGRESS=1 / 0.
PROGRESS_ENV = "CFDG_PROGRESS"


# What an OSError's errno says about the machine: none of these goes away by running the stage again.
ERRNO_KINDS = {
    errno.ENOSPC: "no-space",
    errno.EDQUOT: "no-space",
    errno.EACCES: "permission",
    errno.EPERM: "permission",
    errno.EROFS: "read-only",
}
EXIT_BAD_INPUT = 2
EXIT_MACHINE_FAULT = 3
EXIT_CRASH = 1


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
        return EXIT_BAD_INPUT
    except Exception as e:  # a fault of the machine, or a bug: one line first, the traceback after it
        kind = ERRNO_KINDS.get(e.errno) if isinstance(e, OSError) else None
        what = describe_os_error(e, kind) if kind else f"{type(e).__name__}: {one_line(e)}"
        print(f"stage {sid}: fault: {kind or 'crash'}: {what}", file=sys.stderr, flush=True)
        traceback.print_exc()
        return EXIT_MACHINE_FAULT if kind else EXIT_CRASH
    return 0


def describe_os_error(error: OSError, kind: str) -> str:
    """What went wrong, where, in a few words: `no space left on device writing X (12 MB free)`."""
    path = None if error.filename is None else Path(os.fsdecode(error.filename))
    shown = "" if path is None else f" {relative(path)}"
    if kind == "no-space":
        free = free_bytes(path or Path.cwd())
        room = "" if free is None else f" ({human_bytes(free)} free)"
        what = "disk quota exceeded" if error.errno == errno.EDQUOT else "no space left on device"
        return f"{what}{' writing' + shown if shown else ''}{room}"
    if kind == "read-only":
        return f"read-only file system{':' + shown if shown else ''}"
    return f"permission denied{':' + shown if shown else ''}"


def relative(path: Path) -> str:
    """`path` relative to the working directory (the project root) when it is inside it."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system holding `path` (its nearest existing parent)."""
    for p in (path.absolute(), *path.absolute().parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def human_bytes(n: float) -> str:
    """`512 bytes`, `72.0 KB`, `12.3 MB`, `1.5 GB`."""
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"
