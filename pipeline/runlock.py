"""One pipeline command per repository: `cfdg run`, `cfdg round` and `cfdg study run` take a lock.

A second one in the same repository refuses at once, before it starts Prefect or touches a file,
naming the process that runs (docs/faults.md). The lock is an advisory `flock` on
`.dvc/tmp/cfdg.lock`: the kernel releases it when its holder exits, however it dies, so a lock
can never outlive its process. The file says who holds it (PID, command, start time); a clean
exit empties it, so a file that still names a holder when the lock is free was left by a process
that died (SIGKILL, power cut): that lock is stale, and the new command says so and takes it.

The flows take the same lock (a flow run of `cfdg serve` is a command too); within one process
the lock is re-entrant, so `cfdg run` holding it can run its round flows.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cfdg.errors import CfdgError, warn

LOCK = Path(".dvc/tmp/cfdg.lock")


class RepositoryBusy(CfdgError):
    """Another cfdg command runs in this repository."""


_HELD: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth), this process's locks


def lock_path(root: Path) -> Path | None:
    """The repository's lock file; None outside a DVC repository (DVC then refuses by itself)."""
    return (root / LOCK).resolve() if (root / ".dvc").is_dir() else None


def _holder(text: str) -> dict[str, Any]:
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _who(info: dict[str, Any]) -> str:
    pid = info.get("pid", "?")
    command = info.get("command", "a cfdg command")
    since = f", started {info['started']}" if info.get("started") else ""
    host = f" on {info['host']}" if info.get("host") and info.get("host") != socket.gethostname() else ""
    return f"PID {pid}{host} (`{command}`{since})"


def acquire(root: Path, command: str) -> None:
    """Take the repository's lock for `command`, or raise RepositoryBusy naming its holder."""
    path = lock_path(root)
    if path is None:
        return
    if path in _HELD:
        fd, depth = _HELD[path]
        _HELD[path] = (fd, depth + 1)
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise RepositoryBusy(
            f"{path}: cannot open the run lock ({e.strerror}); {'free space' if e.errno == 28 else 'fix it'} "
            f"and rerun {command}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        info = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        os.close(fd)
        raise RepositoryBusy(
            f"{root.resolve()}: {_who(info)} is running here (lock {LOCK}); wait for it to finish "
            f"(or stop it: kill {info.get('pid', '<pid>')}) and rerun {command}"
        ) from None
    previous = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
    if previous:
        warn(
            f"{root.resolve()}: stale lock {LOCK} from {_who(previous)}, which is no longer running "
            f"(killed?); taking it over: finished stages are kept and {command} resumes after them"
        )
    me = {
        "pid": os.getpid(),
        "command": command,
        "argv": sys.argv,
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, it only cannot say who
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
    _HELD[path] = (fd, 1)


def release(root: Path) -> None:
    path = lock_path(root)
    if path is None or path not in _HELD:
        return
    fd, depth = _HELD[path]
    if depth > 1:
        _HELD[path] = (fd, depth - 1)
        return
    _unlock(path)


def _unlock(path: Path) -> None:
    fd, _ = _HELD.pop(path)
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)  # empty = released cleanly; a holder left in the file means it died
    os.close(fd)  # closing releases the flock


def release_all() -> None:
    """Release every lock of this process (before an os._exit)."""
    for path in list(_HELD):
        _unlock(path)


def begin_command(root: Path, command: str, verbose: bool) -> None:
    """What `run`, `round` and `study run` do first: take the repository's run lock (a second
    command refuses here, in one line, before anything starts) and set how loud faults are."""
    from pipeline import faults

    os.environ[faults.COMMAND_ENV] = command
    if verbose:
        os.environ[faults.VERBOSE_ENV] = "1"
    acquire(root, command)


@contextlib.contextmanager
def held(root: Path, command: str) -> Iterator[None]:
    """The repository's lock for the block (re-entrant within this process)."""
    acquire(root, command)
    try:
        yield
    finally:
        release(root)
