"""JSON files the stages write: plain Python data (numpy to lists, NaN to null), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfdg.io import atomic_write_json, plain


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_json(path, plain(obj))
