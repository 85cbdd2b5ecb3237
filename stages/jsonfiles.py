"""JSON files the stages write: plain Python data (numpy to lists, NaN to null), written atomically."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfdg.io import atomic_write_json


def plain(value: Any) -> Any:
    """JSON-able data from metrics: numpy scalars/arrays to Python, non-finite floats to None."""
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


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_json(path, plain(obj))
