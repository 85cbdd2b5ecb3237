"""What each cell runs, and which of its stages other cells share: the stage keys.

A cell runs dvc.yaml's stages in order, one `dvc repro` each. A stage's key is a digest of the
commit, the target and every params key that it and the stages before it read (as dvc.yaml
declares them), so two cells with equal keys for a stage will find the same stage in DVC's run
cache: the first computes it, the second (waiting on a lock keyed by it) checks it out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.faults import ROUND_STAGES
from pipeline.study.spec import Cell
from stages import params as params_yaml

ONLINE_STAGES = ROUND_STAGES  # the paper's "online phase" (Table 6)


def targets(cell: Cell) -> list[str]:
    """The cell's stages in order, one `dvc repro` each: dataset, pretrain, the rounds, report."""
    rounds = params_yaml.rounds(cell.params, "params.yaml")
    return ["dataset", "pretrain", *(f"{s}@{k}" for k in rounds for s in ROUND_STAGES), "report"]


def stage_sections(dvc_yaml: Path) -> dict[str, list[str]]:
    """stage name -> the params keys dvc.yaml declares for it (foreach stages under their base name)."""
    doc = yaml.safe_load(dvc_yaml.read_text()) or {}
    out: dict[str, list[str]] = {}
    for name, stage in (doc.get("stages") or {}).items():
        body = stage.get("do", stage) if isinstance(stage, Mapping) else {}
        keys: list[str] = []
        for item in body.get("params") or []:
            if isinstance(item, str):
                keys.append(item)
            elif isinstance(item, Mapping):  # {file: [keys]}
                for v in item.values():
                    keys.extend(v or [])
        out[str(name)] = keys
    return out


def _lookup(params: Mapping[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def stage_keys(cell: Cell, sections: Mapping[str, list[str]], commit: str) -> dict[str, str]:
    """target -> a key of everything it and the stages before it read. Equal keys in two cells mean
    DVC will find the same stage in the run cache: the cells may share it (see the module doc)."""
    keys: dict[str, str] = {}
    read: dict[str, Any] = {}
    for target in targets(cell):
        base = target.partition("@")[0]
        for dotted in sections.get(base, []):
            read[dotted] = _lookup(cell.params, dotted)
        blob = json.dumps([commit, target, sorted(read.items())], sort_keys=True, default=str)
        keys[target] = hashlib.sha256(blob.encode()).hexdigest()[:24]
    return keys


def shared_keys(cells: Sequence[Cell], sections: Mapping[str, list[str]], commit: str) -> set[str]:
    """The stage keys more than one cell has: the stages that take a lock while they run."""
    seen: dict[str, int] = {}
    for c in cells:
        for key in set(stage_keys(c, sections, commit).values()):
            seen[key] = seen.get(key, 0) + 1
    return {k for k, n in seen.items() if n > 1}
