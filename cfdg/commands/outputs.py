"""Where a command may write: never over something the user did not ask to replace.

Checked before any work starts, so a refused `--out` costs nothing and leaves no temporary file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Literal

from cfdg.errors import CfdgError

Shape = Literal["dir", "file"]


class OutputError(CfdgError):
    """An output path is taken by something the user did not ask to replace."""


def add_force(parser: argparse.ArgumentParser, what: str = "--out") -> None:
    parser.add_argument("--force", action="store_true", help=f"replace an existing {what} (it is deleted)")


def check_out(path: str | Path, force: bool, shape: Shape, what: str = "--out") -> Path:
    """Refuse `path` when it exists (unless `force`) or is of the other shape (a file where a
    directory goes, or the reverse: replacing one with the other is never what was meant)."""
    path = Path(path)
    if path.is_symlink() or path.exists():
        if shape == "dir" and not path.is_dir():
            raise OutputError(f"{what} {path}: is an existing file; a store is a directory, pick another path")
        if shape == "file" and path.is_dir():
            raise OutputError(f"{what} {path}: is an existing directory; expected a file path")
        if not force:
            raise OutputError(f"{what} {path}: already exists; pass --force to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise OutputError(f"{what} {path}: parent {path.parent} is a file, not a directory")
    return path
