"""Stage metrics: the scalars DVC tracks, apart from curves and timings (logs for people)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stages.jsonfiles import plain, write_json

# Metrics that differ between two runs of the same inputs (wall time, speed, the device used):
# kept out of the tracked metrics files so identical inputs give byte-identical artifacts.
_VOLATILE = ("seconds", "per_s", "device", "time")


def _volatile(key: str) -> bool:
    return any(part in key for part in _VOLATILE)


def split_metrics(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scalars, rest): scalars (nested dicts of numbers/strings) for the DVC metrics file;
    lists (curves, per-episode returns) and volatile timings go to the stage's log instead."""
    scalars: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if _volatile(key):
            rest[key] = value
        elif isinstance(value, Mapping):
            inner, inner_rest = split_metrics(value)
            if inner:
                scalars[key] = inner
            if inner_rest:
                rest[key] = inner_rest
        elif isinstance(value, list | tuple | np.ndarray):
            rest[key] = value
        else:
            scalars[key] = value
    return plain(scalars), plain(rest)


def write_metrics(path: Path, raw: Mapping[str, Any], log_dir: Path = Path("artifacts/logs")) -> dict[str, Any]:
    """Write the scalar metrics to `path` (a DVC metrics file) and everything to `log_dir/<stage>.json`.

    The log (curves, timings) is not a DVC output: it is for people, and it may differ run to run.
    """
    scalars, _ = split_metrics(raw)
    write_json(path, scalars)
    write_json(log_dir / f"{path.parent.name}-{path.name}", raw)
    return scalars


def score_fields(raw: Mapping[str, Any], env_steps: int) -> dict[str, Any]:
    """The learning-curve point of a pretrain/rollout result: steps, mean and std normalised score."""
    evals = raw.get("eval") or []
    last = evals[-1] if evals else {}
    scores = last.get("normalized_scores") or []
    return {
        "env_steps_total": int(env_steps),
        "normalized_score": float(raw.get("final_normalized_score", last.get("normalized_score", float("nan")))),
        "normalized_score_std": float(np.std(scores)) if len(scores) else 0.0,
    }
