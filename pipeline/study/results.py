"""A study's committed results: one JSON file per finished cell under `results/<study>/`.

Workspaces, stores and models stay in `studies/` (ignored by git); what a reader needs to rebuild
every table and picture (learning curve, per-round metrics, quality and fidelity, stage timings,
the commit and params digest the cell ran with) is exported here when the cell finishes, so it
can be committed and outlives the machine that computed it. `cfdg study report` reads only these
files, and `cfdg study run` skips every cell whose file holds the same params digest, on any
machine and at any commit: a study can be finished, or given more seeds, over several runs.

    results/<study>/cells/<cell>.json   one finished cell
    results/<study>/report/             report.md, table1/2/3.md, compute.md, curves.png, results.json
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cfdg.errors import ConfigError
from cfdg.io import atomic_write_json
from pipeline import sections
from pipeline.study.spec import Cell, leaves
from stages import layout
from stages.report import curve_point

RESULTS_DIR = Path("results")
SCHEMA = 1


def results_dir(root: Path, study_name: str) -> Path:
    return root / RESULTS_DIR / study_name


def result_path(root: Path, study_name: str, cell: Cell) -> Path:
    return results_dir(root, study_name) / "cells" / f"{cell.name}.json"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def flatten(obj: Any) -> dict[str, float]:
    """Numeric leaves of nested metrics as dotted keys."""
    return {k: float(v) for k, v in leaves(obj).items() if isinstance(v, int | float) and not isinstance(v, bool)}


def workspace_results(ws: Path) -> dict[str, Any] | None:
    """Curve, scores, per-round stage metrics and quality of a finished cell's workspace."""
    rounds_dir = ws / layout.ROUNDS_DIR
    m0 = _json(rounds_dir / "0" / layout.score_file(0))
    if m0 is None:
        return None
    curve = [curve_point(m0, rounds_dir / "0" / layout.score_file(0))]
    rounds: dict[str, dict[str, Any]] = {"0": {"pretrain": m0}}
    quality: dict[str, Any] = {}
    k = 1
    while (score := rounds_dir / str(k) / layout.score_file(k)).is_file():
        curve.append(curve_point(_json(score), score))
        rdir = rounds_dir / str(k)
        rounds[str(k)] = {
            p.parent.name: _json(p) for p in sorted(rdir.glob(f"*/{layout.METRICS}")) if _json(p) is not None
        }
        q = _json(rdir / layout.QUALITY)
        if q is not None:
            quality[str(k)] = q
        k += 1
    return {
        "curve": [[p.env_steps, p.score] for p in curve],
        "pretrain_score": curve[0].score,
        "final_score": curve[-1].score,
        "rounds": rounds,
        "quality": quality,
    }


def export_cell(root: Path, study_name: str, cell: Cell, ws: Path, state: Mapping[str, Any]) -> Path | None:
    """Write the cell's results file from its finished workspace; None when the workspace has none."""
    res = workspace_results(ws)
    if res is None:
        return None
    record = {
        "schema": SCHEMA,
        "study": study_name,
        "cell": cell.name,
        "grid": cell.grid,
        "dataset": cell.dataset,
        "algo": cell.algo,
        "variant": cell.variant,
        "ablation": cell.ablation,
        "seed": cell.seed,
        "digest": cell.digest,  # sha256 of the cell's params.yaml: what `study run` matches on
        "commit": state.get("commit"),
        "params": yaml.safe_load(cell.params_yaml),
        **res,
        "stages": state.get("stages", {}),
    }
    path = result_path(root, study_name, cell)
    atomic_write_json(path, record)
    return path


def committed(root: Path, study_name: str, cell: Cell) -> dict[str, Any] | None:
    """The cell's results record when one exists for exactly these params, else None."""
    rec = _json(result_path(root, study_name, cell))
    if not isinstance(rec, dict) or rec.get("digest") != cell.digest or rec.get("schema") != SCHEMA:
        return None
    return rec


REQUIRED = ("cell", "variant", "seed", "commit", "params", "curve", "pretrain_score", "final_score", "rounds")
_MISSING = object()


def read_result(path: Path, cell: Cell, pins: Mapping[str, Any]) -> dict[str, Any] | None:
    """A committed cell record for the report: None when the cell has no file yet; ConfigError (one
    line naming the file) when the file is malformed, belongs to another cell, or its recorded
    params differ from a setting the study file pins. The project's params.yaml is not compared:
    a record holds the defaults of the commit it ran at, which the record names (and that
    commit's key names: a key renamed since is compared under its new name, without a warning)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); restore it from git or delete it "
                          "and rerun `cfdg study run` for that cell") from None  # fmt: skip
    if not isinstance(rec, dict) or (missing := [k for k in REQUIRED if k not in rec]):
        what = f"missing {missing[0]!r}" if isinstance(rec, dict) else "not a mapping"
        raise ConfigError(f"{path}: not a cell results file ({what})")
    if rec["cell"] != cell.name:
        raise ConfigError(f"{path}: records cell {rec['cell']!r}, expected {cell.name!r}")
    params = rec["params"]
    if isinstance(params, Mapping):  # a record written before a key's rename: read under the new name
        params = sections.renamed(params, str(path), quiet=True)
    recorded = leaves(params)
    for key, want in pins.items():
        got = recorded.get(key, _MISSING)
        if got != want:
            shown = "nothing" if got is _MISSING else repr(got)
            raise ConfigError(
                f"{path}: params {key} = {shown}, but the study file sets {want!r}; "
                "rerun the cell (`cfdg study run`) or restore the study file"
            )
    return rec


def report_record(rec: Mapping[str, Any]) -> dict[str, Any]:
    """What the report tables read from a results record (quality flattened per round)."""
    return {
        **{k: rec[k] for k in ("cell", "grid", "dataset", "algo", "variant", "ablation", "seed", "commit")},
        "round1": (rec.get("rounds") or {}).get("1", {}).get("rollout"),
        "stage_keys": {t: s.get("key") for t, s in (rec.get("stages") or {}).items()},
        "curve": [tuple(p) for p in rec["curve"]],
        "pretrain_score": rec["pretrain_score"],
        "final_score": rec["final_score"],
        "quality": {int(k): flatten(v) for k, v in rec.get("quality", {}).items()},
        "fit": {int(k): flatten(v["fit"]) for k, v in (rec.get("rounds") or {}).items() if "fit" in v},
        "stages": rec.get("stages", {}),
    }
