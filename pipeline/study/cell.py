"""One cell's stages, in order, through the DVC runner (pipeline/repro.py), in its workspace.

The same code runs a cell on this machine (pipeline/study/run.py: a worktree of the project, the
project's cache) and on a work pool's worker (pipeline/study/pool.py: a clone, the machine's
cache, `dvc repro --pull`). The state file is rewritten after every stage, so a cell cut off at
any point resumes from its first unfinished stage.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock

from cfdg.io import atomic_write_json
from pipeline import repro
from pipeline.faults import Fault, StageFault
from pipeline.study.keys import targets
from pipeline.study.spec import Cell
from pipeline.study.workspace import read_state

# Testing hook, like CFDG_FAIL_STAGE but for one cell: `CFDG_FAIL_CELL=<cell>:<stage>[,...]`.
FAIL_CELL_ENV = "CFDG_FAIL_CELL"


class CellFailed(StageFault):
    """A stage of a cell failed: the cell and its classified Fault (str: the fault's one line).

    A StageFault, so a fault a retry cannot cure (a full disk, a bad input) retries neither the
    stage nor the cell (faults.retry_transient).
    """

    def __init__(self, cell: str, fault: Fault) -> None:
        super().__init__(fault)
        self.cell = cell

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.cell, self.fault))

    def __str__(self) -> str:
        return self.fault.line("cfdg study run")


def default_parallel() -> int:
    """One cell per core: the stages train small networks on one thread each (params.yaml)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def stage_lock(lock_dir: Path | None, key: str | None) -> Iterator[None]:
    """Serialise a stage that other cells share (one machine); no lock for a cell's own stages."""
    if key is None or lock_dir is None:
        yield
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{key}.lock")):
        yield


def cell_env(cell: Cell) -> dict[str, str]:
    """The stages' environment: one thread each, the workspace's own code, the testing hook."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONPATH"] = "."  # the worktree's code, never the installed copy
    for item in os.environ.get(FAIL_CELL_ENV, "").split(","):
        name, _, stage = item.strip().partition(":")
        if name == cell.name and stage:
            env["CFDG_FAIL_STAGE"] = stage
    return env


def execute_cell(
    cell: Cell,
    ws: Path,
    state_file: Path,
    commit: str,
    keys: Mapping[str, str],
    shared: set[str] | None,
    lock_dir: Path | None,
    log: Callable[[str], None],
    progress: Callable[[float], None] = lambda _: None,
    pull: bool = False,
    stage_retries: int = 0,
    detail: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the cell's stages in order; the state file is rewritten after each one (nothing is lost
    when a later stage fails). Stages whose key is in `shared` (all, if None) take a lock. A failed
    stage is retried (`stage_retries`) only if a retry can cure its fault; its output is in the
    cell's `artifacts/logs/<stage>.log`. Returns the final state."""
    env = cell_env(cell)
    state: dict[str, Any] = {
        "cell": cell.name,
        "status": "running",
        "digest": cell.digest,
        "commit": commit,
        "started": time.time(),
    }
    stages: dict[str, Any] = read_state(state_file).get("stages", {})
    todo = targets(cell)
    done: list[str] = []
    for i, target in enumerate(todo):
        key = keys[target]
        for attempt in range(stage_retries + 1):
            with stage_lock(lock_dir, key if shared is None or key in shared else None):
                run = repro.repro(ws, target, env=env, pull=pull, log=log, detail=detail, note=f"cell {cell.name}")
            if (fault := run.fault) is None:
                break
            fault.done = list(done)
            log(
                f"{cell.name}: {target} failed (attempt {attempt + 1}/{stage_retries + 1}): {fault.stage}: {fault.what}"
            )
            if not fault.retry:
                break
        previous = stages.get(target, {})
        did_run, restored = target in run.ran, target in run.restored
        last = "ran" if did_run else "restored" if restored else "unchanged"
        stages[target] = {
            "key": key,
            "last": last,  # what this run did; `ran` / `restored`: how the workspace got the output
            "ran": did_run or (last == "unchanged" and previous.get("ran", False)),
            "restored": restored or (last == "unchanged" and previous.get("restored", False)),
            "wall_s": round(run.wall_s, 3),
            "max_rss_mb": round(run.max_rss_mb, 1),
            # the cost of computing it, kept from the run that computed it
            **(
                {"compute_wall_s": round(run.wall_s, 3), "compute_max_rss_mb": round(run.max_rss_mb, 1)}
                if did_run
                else {k: previous[k] for k in ("compute_wall_s", "compute_max_rss_mb") if k in previous}
            ),
        }
        if run.fault is not None:
            state.update(status="failed", failed_stage=target, stages=stages)
            atomic_write_json(state_file, state)
            raise CellFailed(cell.name, run.fault)
        done.append(target)
        state["stages"] = stages
        atomic_write_json(state_file, state)
        progress(100.0 * (i + 1) / len(todo))
    state.update(status="done", finished=time.time())
    state.pop("failed_stage", None)
    atomic_write_json(state_file, state)
    return state
