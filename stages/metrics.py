"""Stage metrics through dvclive: numbers only in the DVC metrics files, curves as DVC plots.

Text (algo, env, ...) goes to the stage's provenance file, timings and per-episode lists to the
stage's log (for people, untracked), so `dvc metrics show` stays a table of numbers and identical
inputs give byte-identical artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from dvclive import Live

from stages.jsonfiles import plain, write_json

# Metrics that differ between two runs of the same inputs (wall time, speed, the device used):
# kept out of the tracked metrics files so identical inputs give byte-identical artifacts.
_VOLATILE = ("seconds", "per_s", "device", "time")

LOG_DIR = Path("artifacts/logs")


def _volatile(key: str) -> bool:
    return any(part in key for part in _VOLATILE)


def _number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def numbers(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level numeric, non-volatile entries of `raw`: what DVC tracks, one table column each.

    Nested breakdowns (rows drawn per source, ...) stay in the stage's log, so the table stays readable.
    """
    kept = plain({str(k): v for k, v in raw.items() if _number(v) and not _volatile(str(k))})
    return {k: v for k, v in kept.items() if v is not None}  # plain() writes NaN as null: not a number


def text_fields(raw: Mapping[str, Any]) -> dict[str, str]:
    """The top-level text entries of `raw` (algo, env, ...): they belong in the provenance file."""
    return {str(k): v for k, v in raw.items() if isinstance(v, str) and not _volatile(str(k))}


def curve_points(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A curve's points with their finite scalar numbers only (per-episode lists dropped)."""
    kept = [numbers(p) for p in points]
    return [p for p in kept if p]


def write_metrics(
    live_dir: Path,
    metrics: Mapping[str, Any],
    log_name: str | None,
    raw: Mapping[str, Any] | None = None,
    curves: Mapping[str, tuple[Sequence[Mapping[str, Any]], str, str]] | None = None,
) -> dict[str, Any]:
    """Write `metrics`' numbers to `live_dir/metrics.json` and each curve `name: (points, x, y)` to
    `live_dir/plots/custom/<name>.json` with dvclive; `raw` (default `metrics`), timings and all,
    to the untracked log `artifacts/logs/<log_name>.json` (none without a name). Returns the numbers written.
    """
    summary = numbers(metrics)
    # No dvc.yaml of its own (dvc.yaml declares these files), no experiment, no clock: reruns are identical.
    with Live(str(live_dir), dvcyaml=None, save_dvc_exp=False, report=None) as live:
        live.summary = summary
        for name, (points, x, y) in (curves or {}).items():
            kept = [p for p in curve_points(points) if x in p and y in p]
            if kept:
                live.log_plot(name, kept, x=x, y=y)
    if log_name is not None:
        write_json(LOG_DIR / f"{log_name}.json", raw if raw is not None else metrics)
    return summary


def quality_headline(quality: Mapping[str, Any]) -> dict[str, float | None]:
    """The few quality numbers worth a column (classifier JS of offline/generated vs online, the
    generated rows' next-state error, the memorisation ratio); quality.json keeps the rest."""
    row: dict[str, float | None] = {}
    for side in ("offline", "generated"):
        for div in ("state", "action", "transition"):
            value = (quality.get(f"{side}_vs_online") or {}).get(div) or {}
            est = value.get("classifier") if isinstance(value, Mapping) else value
            row[f"js_{side}_{div}"] = None if est is None else float(est)
    error = ((quality.get("fidelity") or {}).get("generated") or {}).get("next_state_rel_error")
    row["next_state_rel_error"] = None if error is None else float(error)
    ratio = (quality.get("memorisation") or {}).get("ratio")
    row["memorisation_ratio"] = None if ratio is None else float(ratio)
    return row


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
