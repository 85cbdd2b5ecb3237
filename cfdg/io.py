"""Atomic writes and content digests.

Every artifact is written beside its final path and renamed into place only when complete,
so a crash mid-stage never leaves a half-written file where DVC or the next stage looks.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import shutil
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Testing hook: `CFDG_KILL_AT=<stage id>:<point>` makes that stage SIGKILL itself at the point, as a
# power cut or an OOM kill would (points: `start`, `end` of a stage; `temp-dir` / `temp-file`: the
# stage's first complete temporary directory (store) / file, not yet renamed into place). The stage
# runner exports the running stage's id.
KILL_ENV = "CFDG_KILL_AT"
STAGE_ENV = "CFDG_STAGE_ID"


def kill_point(point: str) -> None:
    """SIGKILL this process when CFDG_KILL_AT names the running stage and `point` (tests only)."""
    wanted = {w.strip() for w in os.environ.get(KILL_ENV, "").split(",") if w.strip()}
    stage = os.environ.get(STAGE_ENV)
    if stage and f"{stage}:{point}" in wanted:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _temp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove `.NAME.tmp-*` siblings of `path` that a killed write left; returns what it removed.

    Only the writer of `path` calls this, and one output has one writer at a time, so any such
    temp belongs to a write that died.
    """
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f".{glob_escape(path.name)}.tmp-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = _temp_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        kill_point("temp-dir")
        replace_path(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        name_destination(e, tmp, path)
        raise


def name_destination(error: BaseException, tmp: Path, path: Path) -> None:
    """Make an OSError of a write name the output, not its (removed) temporary.

    A failed write() names no file at all (`[Errno 28] No space left on device`), and a temporary's
    name means nothing to a user; the output's path says what could not be written. An error naming
    another file (an input read inside the block) is left as it is. The error keeps its type and errno.
    """
    if not isinstance(error, OSError):
        return
    named = error.filename
    if named is not None:
        try:
            inside = Path(os.fsdecode(named)).resolve().is_relative_to(tmp.resolve())
        except (OSError, ValueError, TypeError):
            inside = False
        if not inside:
            return
    error.filename = str(path)  # an enclosing write, whose temporary held this one, renames it again
    error.add_note(f"while writing {path} (its temporary {tmp.name} was removed)")


def replace_path(src: Path, dst: Path) -> None:
    """Move `src` onto `dst`, removing an existing `dst` (file or directory) first."""
    if dst.is_dir() and not dst.is_symlink():
        old = _temp_sibling(dst)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file path that replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        kill_point("temp-file")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        name_destination(e, tmp, path)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Sorted keys and a trailing newline: the same object always gives the same bytes."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | os.PathLike, what: str) -> Any:
    """torch.load with weights_only=True (checkpoints are untrusted input), errors naming the file.

    The file's first bytes say what it is before torch looks: torch writes a zip archive (or, in its
    legacy format, a pickle); anything else is not a checkpoint, and a zip without its central
    directory was cut short. So the message names the real problem, not torch's guess at it.
    """
    import torch

    from cfdg.errors import CheckpointError

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a {what} checkpoint file (.pt)")
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} checkpoint does not exist")
    unreadable = f"{path}: not a readable {what} checkpoint"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise CheckpointError(f"{unreadable} (the file is empty)")
    is_zip = head.startswith(b"PK\x03\x04")
    if not is_zip and not head.startswith(b"\x80"):
        raise CheckpointError(
            f"{unreadable} (not a torch checkpoint: neither a zip archive nor a pickle; it starts {head[:12]!r})"
        )
    if is_zip and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{unreadable} (truncated or damaged: a {size}-byte zip archive without its end record)")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before failing
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's messages span lines and advise weights_only=False, which we never do
        if "Weights only load failed" in str(e):
            reason = "it holds pickled Python objects, not only tensors; refused, checkpoints load weights-only"
        else:
            first = " ".join(str(e).split())[:160]
            kind = "damaged torch checkpoint" if is_zip else "a pickle torch cannot read, damaged or not a checkpoint"
            reason = f"{kind}: {type(e).__name__}" + (f": {first}" if first else "")
        raise CheckpointError(f"{unreadable} ({reason})") from e


def digest(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's relative paths and contents (sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    if not path.is_dir():
        raise FileNotFoundError(path)
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(p.relative_to(path).as_posix().encode() + b"\0")
        h.update(digest(p).encode())
    return h.hexdigest()


def code_version() -> str:
    """Package version plus a hash of the library's source: changes exactly when the code does."""
    from cfdg import __version__

    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes())
    return f"{__version__}+{h.hexdigest()[:12]}"


def plain(value: Any) -> Any:
    """JSON-able data (metrics, cards): numpy scalars/arrays to Python, tuples to lists, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value
