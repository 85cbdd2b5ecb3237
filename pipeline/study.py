"""`cfdg study run | report | cells FILE`: a grid of pipeline runs in parallel through Prefect.

Each cell of a study (pipeline/study_spec.py) is one run of the project's dvc.yaml in its own
workspace: a git worktree of the project at one commit, with the cell's params.yaml, whose DVC
cache is the project's cache. Every `dvc repro` in any cell therefore looks in one run cache,
so a dataset or a pretraining that several cells share is computed once and checked out by the
others. Cells that share a stage while running in parallel take a lock keyed by what that stage
reads, so the second waits for the first and gets a cache checkout instead of a recompute.

Prefect runs the cells N at once (threads; each cell is its own flow run, named after the cell,
with a progress artifact), retries a failed cell alone, and a rerun skips finished cells.
The same cells can run on a Prefect work pool across machines (pipeline/study_pool.py).
Workspaces and results live in `studies/<name>/` of the project:

    studies/<name>/cells/<cell>/        the cell's workspace (git worktree)
    studies/<name>/cells/<cell>.json    its state: done or not, per-stage wall time and peak memory

A finished cell's results (no artifacts) are exported to `results/<name>/cells/<cell>.json`
(pipeline/study_results.py) for committing; the report is built from those files alone, in
`results/<name>/report/`, and a later run skips every cell whose results are there.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

import pipeline  # noqa: F401  (Prefect/DVC environment defaults, before prefect is imported)
from cfdg.errors import CfdgError, ConfigError
from cfdg.io import atomic_write_json, atomic_write_text
from pipeline import faults, runlock
from pipeline.faults import Fault, StageFault
from pipeline.study_results import committed, export_cell
from pipeline.study_spec import Cell, Study, load_study, slug
from stages import params as params_yaml

STUDIES_DIR = Path("studies")
ROUND_STAGES = ("rollout", "fit", "materialise")
ONLINE_STAGES = ROUND_STAGES  # the paper's "online phase" (Table 6)
# Testing hook, like CFDG_FAIL_STAGE but for one cell: `CFDG_FAIL_CELL=<cell>:<stage>[,...]`.
FAIL_CELL_ENV = "CFDG_FAIL_CELL"
DVC = (sys.executable, "-m", "dvc")


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


# ---------------------------------------------------------------------------------------------
# Workspaces


def study_dir(root: Path, study: Study) -> Path:
    return root / STUDIES_DIR / study.name


def cell_dir(sdir: Path, cell: Cell) -> Path:
    return sdir / "cells" / cell.name


def state_path(sdir: Path, cell: Cell) -> Path:
    return sdir / "cells" / f"{cell.name}.json"


def _git(root: Path, *args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ConfigError(f"{root}: git {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip()


def project_commit(root: Path, allow_dirty: bool = False) -> str:
    """The commit the cells run. Uncommitted code changes would silently be left out: refuse them."""
    if not (root / "dvc.yaml").is_file():
        raise ConfigError(f"{root}: no dvc.yaml here (run from the project root or pass --root)")
    commit = _git(root, "rev-parse", "HEAD")
    if not allow_dirty:
        status = _git(root, "status", "--porcelain", "--untracked-files=no")
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
        _git(root, "worktree", "add", "--detach", "--force", str(ws), commit)
    elif _git(ws, "rev-parse", "HEAD") != commit:  # the project moved on since this cell last ran
        _git(ws, "checkout", "--quiet", "--detach", "--force", commit)
    if not (ws / ".dvc").is_dir():
        raise ConfigError(f"{root}: the project has no committed .dvc directory (run `dvc init` and commit)")
    subprocess.run([*DVC, "cache", "dir", "--local", str(cache)], cwd=ws, check=True, capture_output=True)
    params = ws / "params.yaml"
    if not params.is_file() or params.read_text() != params_yaml:
        atomic_write_text(params, params_yaml)
    return ws


# ---------------------------------------------------------------------------------------------
# What a cell runs


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
    seen: dict[str, int] = {}
    for c in cells:
        for key in set(stage_keys(c, sections, commit).values()):
            seen[key] = seen.get(key, 0) + 1
    return {k for k, n in seen.items() if n > 1}


@contextlib.contextmanager
def stage_lock(lock_dir: Path | None, key: str | None) -> Iterator[None]:
    """Serialise a stage that other cells share (one machine); no lock for a cell's own stages."""
    if key is None or lock_dir is None:
        yield
        return
    from filelock import FileLock

    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{key}.lock")):
        yield


@dataclasses.dataclass
class StageRun:
    """One `dvc repro <target>`: exit code, output, wall time and the peak memory of its process tree."""

    target: str
    code: int
    lines: list[str]
    wall_s: float
    max_rss_mb: float

    @property
    def ran(self) -> list[str]:
        return [ln.split("'")[1] for ln in self.lines if ln.startswith("Running stage '")]

    @property
    def restored(self) -> list[str]:
        return [ln.split("'")[1] for ln in self.lines if "is cached - skipping run" in ln and ln.startswith("Stage '")]


def run_target(
    ws: Path,
    target: str,
    env: Mapping[str, str],
    log: Callable[[str], None],
    pull: bool = False,
    detail: Callable[[str], None] | None = None,
) -> StageRun:
    """`dvc repro [--pull] <target>` in `ws`, its output passed to `log` line by line (from a
    failure's first line on, to `detail` when given: tracebacks are for the log and --verbose).

    Peak memory is sampled (every 0.2 s) over the processes DVC starts, the stage itself, not
    DVC's own (larger) footprint; rusage cannot tell them apart, nor cells running in threads.
    """
    import threading

    import psutil

    from pipeline.flows import _QUIET, _split_output

    cmd = [*DVC, "repro", *(["--pull"] if pull else []), target]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ws, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = [0]
    finished = threading.Event()

    def sample() -> None:
        parent = psutil.Process(proc.pid)
        while not finished.wait(0.2):
            total = 0
            try:
                for child in parent.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += child.memory_info().rss
            except psutil.Error:
                return
            peak[0] = max(peak[0], total)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    lines: list[str] = []
    failing = False
    assert proc.stdout is not None
    for raw, redraw in _split_output(proc.stdout):
        line = raw.rstrip()
        if not line.strip() or redraw:
            continue
        lines.append(line)
        failing = failing or faults.failure_begins(line)
        if not line.strip().startswith(_QUIET):
            (detail if failing and detail is not None else log)(line)
    code = proc.wait()
    finished.set()
    sampler.join()
    return StageRun(target, code, lines, time.monotonic() - start, peak[0] / 2**20)


def cell_env(cell: Cell) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["CFDG_PROGRESS"] = env.get("CFDG_PROGRESS", "1")
    env["PYTHONPATH"] = "."  # the worktree's code, never the installed copy
    for item in os.environ.get(FAIL_CELL_ENV, "").split(","):
        name, _, stage = item.strip().partition(":")
        if name == cell.name and stage:
            env["CFDG_FAIL_STAGE"] = stage
    return env


def read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def is_done(sdir: Path, cell: Cell, commit: str) -> bool:
    s = read_state(state_path(sdir, cell))
    return s.get("status") == "done" and s.get("digest") == cell.digest and s.get("commit") == commit


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
        fault = None
        for attempt in range(stage_retries + 1):
            with stage_lock(lock_dir, key if shared is None or key in shared else None):
                run = run_target(ws, target, env, log, pull=pull, detail=detail)
            header = f"$ dvc repro {target}    # cell {cell.name}, exit code {run.code}, {time.ctime()}"
            where = faults.write_stage_log(ws, target, run.lines, header)
            if run.code == 0:
                break
            fault = faults.classify(target, run.code, run.lines, ws)
            fault.log, fault.done = where, list(done)
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
        if run.code != 0:
            state.update(status="failed", failed_stage=target, stages=stages)
            atomic_write_json(state_file, state)
            assert fault is not None
            raise CellFailed(cell.name, fault)
        done.append(target)
        state["stages"] = stages
        atomic_write_json(state_file, state)
        progress(100.0 * (i + 1) / len(todo))
    state.update(status="done", finished=time.time())
    state.pop("failed_stage", None)
    atomic_write_json(state_file, state)
    return state


# ---------------------------------------------------------------------------------------------
# Prefect: a flow run per cell, a study flow over them


def _artifact_key(text: str) -> str:
    return slug(text).lower().replace(".", "-").replace("_", "-")[:100]


def _cell_flow():
    from prefect import flow, get_run_logger
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    @flow(name="cfdg-study-cell", flow_run_name="{name}", log_prints=True)
    def cfdg_study_cell(
        name: str, study_file: str, root: str, stage_retries: int = 1, allow_dirty: bool = False
    ) -> dict[str, Any]:
        """One cell of a study: its stages through DVC in its own workspace (the shared cache)."""
        logger = get_run_logger()
        plan = Plan.make(Path(root), study_file, allow_dirty=allow_dirty, validate=False)
        cell = plan.study.cell(name)
        progress_id = create_progress_artifact(
            0.0, key=_artifact_key(f"cell-{plan.study.name}-{name}"), description=f"cell {name}: stages done"
        )
        return execute_cell(
            cell,
            cell_dir(plan.sdir, cell),
            state_path(plan.sdir, cell),
            plan.commit,
            plan.keys[cell.name],
            plan.shared,
            plan.sdir / "locks",
            logger.info,
            lambda pct: update_progress_artifact(progress_id, pct),
            stage_retries=stage_retries,
            detail=lambda line: logger.info(line, extra={faults.DETAIL: True}),
        )

    return cfdg_study_cell


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


def default_parallel() -> int:
    """One cell per core: the stages train small networks on one thread each (params.yaml)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def run_study(
    study_file: str | Path,
    root: str | Path = ".",
    parallel: int | None = None,
    cell_retries: int = 1,
    stage_retries: int = 0,
    allow_dirty: bool = False,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Validate everything, then run the pending cells N at once in one Prefect flow; write the report.

    `only`: cell-name patterns (fnmatch); other pending cells wait for a later run (a pilot's subset).
    """
    plan = Plan.make(Path(root), study_file, allow_dirty=allow_dirty)  # bad input fails here, nothing started
    if only:
        names = [c.name for c in plan.study.cells]
        unknown = [p for p in only if not fnmatch.filter(names, p)]
        if unknown:
            raise ConfigError(f"{study_file}: --only {' '.join(unknown)} matches no cell (see `cfdg study cells`)")
    n = parallel or default_parallel()
    from prefect import flow, get_run_logger, task
    from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
    from prefect.futures import as_completed
    from prefect.task_runners import ThreadPoolTaskRunner

    faults.quiet_console()
    cell_flow = _cell_flow()
    root_s = str(plan.root)

    @task(
        name="study-cell",
        task_run_name="{name}",
        retries=cell_retries,
        retry_delay_seconds=1,
        retry_condition_fn=faults.retry_transient,
    )
    def cell_task(name: str) -> dict[str, Any]:
        return cell_flow(name, str(study_file), root_s, stage_retries, allow_dirty)

    @flow(name="cfdg-study", flow_run_name=f"study-{plan.study.name}", task_runner=ThreadPoolTaskRunner(max_workers=n))
    def cfdg_study() -> dict[str, Any]:
        logger = get_run_logger()
        cache = cache_dir(plan.root)
        unfinished = plan.pending()
        pending = [c for c in unfinished if not only or any(fnmatch.fnmatch(c.name, p) for p in only)]
        skipped = [c.name for c in plan.study.cells if c not in unfinished]
        logger.info(
            "study %s: %d cells, %d finished (skipped), %d to run, %d at once; cache %s",
            plan.study.name,
            len(plan.study.cells),
            len(skipped),
            len(pending),
            n,
            cache,
        )
        for c in pending:  # sequential: `git worktree add` takes the repository's lock
            prepare_workspace(plan.root, cell_dir(plan.sdir, c), plan.commit, cache, c.params_yaml)
        atomic_write_json(plan.sdir / "study.json", study_record(plan))
        overall = create_progress_artifact(
            100.0 * len(skipped) / max(1, len(plan.study.cells)),
            key=_artifact_key(f"study-{plan.study.name}-progress"),
            description="cells finished",
        )
        futures = {cell_task.submit(c.name): c for c in pending}
        failed: dict[str, str] = {}
        done = len(skipped)
        for fut in as_completed(list(futures)):
            c = futures[fut]
            try:
                fut.result()
                done += 1
                exported = plan.export(c)
                logger.info("cell %s: done; results in %s", c.name, exported)
            except Exception as e:  # one cell's failure loses nothing of the others
                failed[c.name] = str(e).splitlines()[0]
                logger.error("cell %s failed: %s", c.name, failed[c.name])
            update_progress_artifact(overall, 100.0 * done / max(1, len(plan.study.cells)))
        create_table_artifact(
            [cell_row(plan, c) for c in plan.study.cells],
            key=_artifact_key(f"study-{plan.study.name}-cells"),
            description=f"cells of study {plan.study.name}",
        )
        from pipeline.study_report import publish, write_report

        try:
            report: Path | str = write_report(plan)
            publish(plan, report)
        except ConfigError as e:  # the cells ran; a report check (mixed commits, a bad file) stops only the report
            logger.warning("report not written: %s", e)
            report = f"not written ({e})"
        return {"cells": len(plan.study.cells), "skipped": skipped, "failed": failed, "report": str(report)}

    return cfdg_study()


def study_record(plan: Plan) -> dict[str, Any]:
    return {
        "study": plan.study.name,
        "file": str(plan.study.path),
        "commit": plan.commit,
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
            for c in plan.study.cells
        ],
    }


def cell_row(plan: Plan, cell: Cell) -> dict[str, Any]:
    s = read_state(state_path(plan.sdir, cell))
    return {
        "cell": cell.name,
        "status": s.get("status", "pending") if s.get("digest") == cell.digest else "pending",
        "failed_stage": s.get("failed_stage"),
    }


# ---------------------------------------------------------------------------------------------
# Command line


def _cmd_run(args: argparse.Namespace) -> int:
    runlock.begin_command(Path(args.root), "cfdg study run", args.verbose)
    if args.pool:
        from pipeline.study_pool import run_on_pool

        faults.quiet_console()
        result = run_on_pool(
            args.study, root=args.root, pool=args.pool, remote=args.remote, repo=args.repo, allow_dirty=args.allow_dirty
        )
    else:
        result = run_study(
            args.study,
            root=args.root,
            parallel=args.parallel,
            cell_retries=args.retries,
            stage_retries=args.stage_retries,
            allow_dirty=args.allow_dirty,
            only=args.only or (),
        )
    faults.mute_console()  # Prefect's closing lines would follow the summary
    for name, why in result["failed"].items():
        print(f"study: cell {name} failed: {why}", file=sys.stderr)
    print(
        f"study: {result['cells']} cells, {len(result['skipped'])} already finished, "
        f"{len(result['failed'])} failed; report {result['report']}"
    )
    if result["failed"]:
        print("study: rerun the same command to retry the failed cells (finished ones are skipped)", file=sys.stderr)
        return 1
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pipeline.study_report import publish_flow, write_report

    plan = Plan.make(Path(args.root), args.study, allow_dirty=True, validate=False)
    report = publish_flow(plan, args.mix_commits) if args.prefect else write_report(plan, args.mix_commits)
    first = report.read_text().split("\n", 3)[2]  # "N of M cells finished ...; code ...; study file ..."
    print(f"study: {first}")
    print(f"study: report written to {report}")
    return 0


def _cmd_cells(args: argparse.Namespace) -> int:
    study = load_study(args.study, args.root, validate=not args.no_validate, check_files=not args.no_files)
    for c in study.cells:
        print(c.name)
    print(f"{study.name}: {len(study.cells)} cells", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `study` with its subcommands to a command line (`cfdg`, `python -m pipeline`)."""
    study = sub.add_parser("study", help="run a grid of pipeline runs (a study) and its paper-style report")
    ssub = study.add_subparsers(dest="study_command", required=True)

    p = ssub.add_parser("run", help="run the study's cells (N at once); finished cells are skipped")
    p.add_argument("study", help="study file, e.g. configs/study/tiny.yaml")
    p.add_argument("--root", default=".", help="project root (a git repository holding dvc.yaml)")
    p.add_argument("--parallel", "-j", type=int, help=f"cells at once (default: the cores, here {default_parallel()})")
    p.add_argument("--retries", type=int, default=1, help="retries of a failed cell within this run (default 1)")
    p.add_argument("--stage-retries", type=int, default=0, help="retries of a failed stage before its cell fails")
    p.add_argument("--allow-dirty", action="store_true", help="run although tracked code has uncommitted changes")
    p.add_argument("--only", nargs="+", metavar="PATTERN", help="run only the pending cells matching these names/globs")
    p.add_argument("--verbose", "-v", action="store_true", help="print failed stages' tracebacks too (docs/faults.md)")
    p.add_argument("--pool", help="run the cells as flow runs on this Prefect work pool (see docs/studies.md)")
    p.add_argument("--remote", help="with --pool: DVC remote URL the cells push to and pull from")
    p.add_argument("--repo", help="with --pool: git URL the workers clone (default: this project's directory)")
    p.set_defaults(func=_cmd_run)

    p = ssub.add_parser("report", help="Tables 1, 2, 3, the compute table and curves from the cells' metrics")
    p.add_argument("study")
    p.add_argument("--root", default=".")
    p.add_argument("--prefect", action="store_true", help="also publish the tables and curves as Prefect artifacts")
    p.add_argument("--mix-commits", action="store_true", help="report cells of different commits together (noted)")
    p.set_defaults(func=_cmd_report)

    p = ssub.add_parser("cells", help="list the study's cells (validates every cell's params)")
    p.add_argument("study")
    p.add_argument("--root", default=".")
    p.add_argument("--no-validate", action="store_true")
    p.add_argument("--no-files", action="store_true", help="do not require D4RL source files to be present here")
    p.set_defaults(func=_cmd_cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.study")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["study", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except CfdgError as e:
        print(f"study: error: {e}", file=sys.stderr)
        return 2
    finally:
        runlock.release_all()


if __name__ == "__main__":
    sys.exit(main())
