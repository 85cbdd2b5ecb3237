"""Where a study lives in a project, and the Plan that resolves a study file against it.

    studies/<name>/cells/<cell>/        the cell's workspace: a git worktree of the project at the
                                        study's commit, the cell's params.yaml, the shared DVC cache
    studies/<name>/cells/<cell>.json    its state: done or not, per-stage wall time and peak memory
    studies/<name>/study.json           the cells and the commit of the last run
    studies/<name>/locks/               the locks of stages several cells share

A finished cell's results are exported to `results/<name>/cells/` (pipeline/study/results.py);
workspaces are ignored by git.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cfdg.errors import ConfigError
from cfdg.io import atomic_write_text
from pipeline.repro import DVC
from pipeline.study.keys import shared_keys, stage_keys, stage_sections
from pipeline.study.results import committed, export_cell
from pipeline.study.spec import Cell, Study, load_study

STUDIES_DIR = Path("studies")


def study_dir(root: Path, study: Study) -> Path:
    return root / STUDIES_DIR / study.name


def cell_dir(sdir: Path, cell: Cell) -> Path:
    return sdir / "cells" / cell.name


def state_path(sdir: Path, cell: Cell) -> Path:
    return sdir / "cells" / f"{cell.name}.json"


def git(root: Path, *args: str) -> str:
    """`git <args>` in `root`; its stdout, or ConfigError with git's last line."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{root}: git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip()


def project_commit(root: Path, allow_dirty: bool = False) -> str:
    """The commit the cells run. Uncommitted code changes would silently be left out: refuse them."""
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(f"{root}: no dvc.yaml here (run from the project root or pass --root)")
    commit = git(root, "rev-parse", "HEAD")
    if not allow_dirty:
        status = git(root, "status", "--porcelain", "--untracked-files=no")
        paths = [ln.split(maxsplit=1)[1] for ln in status.splitlines()]
        # params.yaml, dvc.lock and the study results are outputs, not the code the cells run
        changed = [p for p in paths if p not in ("params.yaml", "dvc.lock") and not p.startswith("results/")]
        if changed:
            raise ConfigError(
                f"{root}: uncommitted changes in {changed[0]}; cells run the committed code "
                f"(HEAD {commit[:10]}): commit first, or pass --allow-dirty"
            )
    return commit


def cache_dir(root: Path) -> Path:
    """The project's DVC cache, which every cell shares."""
    proc = subprocess.run([*DVC, "cache", "dir"], cwd=root, capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip()).resolve()
    return (root / ".dvc" / "cache").resolve()


def prepare_workspace(root: Path, ws: Path, commit: str, cache: Path, params_yaml: str) -> Path:
    """A git worktree of the project at `commit` using the shared DVC cache, with the cell's params."""
    if not (ws / ".git").exists():
        ws.parent.mkdir(parents=True, exist_ok=True)
        git(root, "worktree", "add", "--detach", "--force", str(ws), commit)
    elif git(ws, "rev-parse", "HEAD") != commit:  # the project moved on since this cell last ran
        git(ws, "checkout", "--quiet", "--detach", "--force", commit)
    if not (ws / ".dvc").is_dir():
        raise ConfigError(f"{root}: the project has no committed .dvc directory (run `dvc init` and commit)")
    subprocess.run([*DVC, "cache", "dir", "--local", str(cache)], cwd=ws, check=True, capture_output=True)
    params = ws / "params.yaml"
    if not params.is_file() or params.read_text() != params_yaml:
        atomic_write_text(params, params_yaml)
    return ws


def read_state(path: Path) -> dict[str, Any]:
    """A cell's state file; {} when there is none (or it was cut off mid-write)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def is_done(sdir: Path, cell: Cell, commit: str) -> bool:
    s = read_state(state_path(sdir, cell))
    return s.get("status") == "done" and s.get("digest") == cell.digest and s.get("commit") == commit


@dataclasses.dataclass
class Plan:
    """A study resolved against a project: its commit, directory, stage keys and shared stages."""

    root: Path
    study: Study
    commit: str
    sdir: Path
    keys: dict[str, dict[str, str]]
    shared: set[str]

    @classmethod
    def make(cls, root: Path, study_file: str | Path, allow_dirty: bool = False, validate: bool = True) -> Plan:
        root = root.resolve()
        study = load_study(study_file, root, validate=validate)
        commit = project_commit(root, allow_dirty)
        sections = stage_sections(root / "dvc.yaml")
        keys = {c.name: stage_keys(c, sections, commit) for c in study.cells}
        shared = shared_keys(study.cells, sections, commit)
        return cls(root, study, commit, study_dir(root, study), keys, shared)

    def pending(self) -> list[Cell]:
        """Cells with neither committed results for their params nor a finished workspace at this commit."""
        return [
            c
            for c in self.study.cells
            if committed(self.root, self.study.name, c) is None and not is_done(self.sdir, c, self.commit)
        ]

    def matching(self, only: Sequence[str] = ()) -> list[Cell]:
        """The cells whose names match one of the `only` patterns (fnmatch; none given: all).
        A pattern that matches no cell is a ConfigError: a typo must not run nothing quietly."""
        if not only:
            return list(self.study.cells)
        names = [c.name for c in self.study.cells]
        unknown = [p for p in only if not fnmatch.filter(names, p)]
        if unknown:
            raise ConfigError(f"{self.study.path}: --only {' '.join(unknown)} matches no cell (see `cfdg study cells`)")
        return [c for c in self.study.cells if any(fnmatch.fnmatch(c.name, p) for p in only)]

    def export(self, cell: Cell) -> Path | None:
        """Write `results/<study>/cells/<cell>.json` from the cell's finished workspace (if it is finished)."""
        if not is_done(self.sdir, cell, self.commit):
            return None
        state = read_state(state_path(self.sdir, cell))
        return export_cell(self.root, self.study.name, cell, cell_dir(self.sdir, cell), state)

    def export_finished(self) -> list[Path]:
        """Export every cell finished in its workspace whose results are not yet there."""
        return [
            p
            for c in self.study.cells
            if committed(self.root, self.study.name, c) is None and (p := self.export(c)) is not None
        ]

    def record(self) -> dict[str, Any]:
        """`studies/<name>/study.json`: the study's cells and the commit they run."""
        return {
            "study": self.study.name,
            "file": str(self.study.path),
            "commit": self.commit,
            "cells": [
                {
                    "name": c.name,
                    "grid": c.grid,
                    "dataset": c.dataset,
                    "algo": c.algo,
                    "variant": c.variant,
                    "ablation": c.ablation,
                    "seed": c.seed,
                    "digest": c.digest,
                }
                for c in self.study.cells
            ],
        }
