"""`cfdg study run` on this machine: the cells N at once through Prefect, then the report.

Each cell of a study (pipeline/study/spec.py) is one run of the project's dvc.yaml in its own
workspace (pipeline/study/workspace.py): a git worktree of the project at one commit, with the
cell's params.yaml, whose DVC cache is the project's cache. Every `dvc repro` in any cell
therefore looks in one run cache, so a dataset or a pretraining that several cells share is
computed once and checked out by the others. Cells that share a stage while running in parallel
take a lock keyed by what that stage reads (pipeline/study/keys.py), so the second waits for the
first and gets a cache checkout instead of a recompute.

Prefect runs the cells N at once (threads; each cell is its own flow run, named after the cell,
with a progress artifact), retries a failed cell alone, and a rerun skips finished cells. A
finished cell's results are exported to `results/<name>/cells/<cell>.json`
(pipeline/study/results.py) and the report is built from those files alone
(pipeline/study/report.py), published here as Prefect artifacts. The same cells can run on a
Prefect work pool across machines (pipeline/study/pool.py).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_image_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from cfdg.errors import ConfigError
from cfdg.io import atomic_write_json
from pipeline import faults
from pipeline.study.cell import default_parallel, execute_cell
from pipeline.study.report import WrittenReport, write_report
from pipeline.study.spec import Cell, artifact_key
from pipeline.study.workspace import Plan, cache_dir, cell_dir, prepare_workspace, read_state, state_path


@flow(name="cfdg-study-cell", flow_run_name="{name}", log_prints=True)
def cfdg_study_cell(
    name: str, study_file: str, root: str, stage_retries: int = 1, allow_dirty: bool = False
) -> dict[str, Any]:
    """One cell of a study: its stages through DVC in its own workspace (the shared cache)."""
    logger = get_run_logger()
    plan = Plan.make(Path(root), study_file, allow_dirty=allow_dirty, validate=False)
    cell = plan.study.cell(name)
    progress_id = create_progress_artifact(
        0.0, key=artifact_key(f"cell-{plan.study.name}-{name}"), description=f"cell {name}: stages done"
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


def run_study(
    plan: Plan,
    parallel: int | None = None,
    cell_retries: int = 1,
    stage_retries: int = 0,
    allow_dirty: bool = False,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Run the plan's pending cells N at once in one Prefect flow; write the report.

    The plan is made (every cell validated) before this module is imported, so bad input fails
    having started nothing. `only`: cell-name patterns (fnmatch, checked by `Plan.matching`);
    other pending cells wait for a later run (a pilot's subset).
    """
    n = parallel or default_parallel()
    faults.quiet_console()
    root_s = str(plan.root)

    @task(
        name="study-cell",
        task_run_name="{name}",
        retries=cell_retries,
        retry_delay_seconds=1,
        retry_condition_fn=faults.retry_transient,
    )
    def cell_task(name: str) -> dict[str, Any]:
        return cfdg_study_cell(name, str(plan.study.path), root_s, stage_retries, allow_dirty)

    @flow(name="cfdg-study", flow_run_name=f"study-{plan.study.name}", task_runner=ThreadPoolTaskRunner(max_workers=n))
    def cfdg_study() -> dict[str, Any]:
        logger = get_run_logger()
        cache = cache_dir(plan.root)
        unfinished = plan.pending()
        pending = [c for c in unfinished if c in plan.matching(only)]
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
        atomic_write_json(plan.sdir / "study.json", plan.record())
        overall = create_progress_artifact(
            100.0 * len(skipped) / max(1, len(plan.study.cells)),
            key=artifact_key(f"study-{plan.study.name}-progress"),
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
            key=artifact_key(f"study-{plan.study.name}-cells"),
            description=f"cells of study {plan.study.name}",
        )
        try:
            written = write_report(plan)
            publish(plan, written.path)
            report = str(written.path)
        except ConfigError as e:  # the cells ran; a report check (mixed commits, a bad file) stops only the report
            logger.warning("report not written: %s", e)
            report = f"not written ({e})"
        return {"cells": len(plan.study.cells), "skipped": skipped, "failed": failed, "report": report}

    return cfdg_study()


def cell_row(plan: Plan, cell: Cell) -> dict[str, Any]:
    s = read_state(state_path(plan.sdir, cell))
    return {
        "cell": cell.name,
        "status": s.get("status", "pending") if s.get("digest") == cell.digest else "pending",
        "failed_stage": s.get("failed_stage"),
    }


def publish(plan: Plan, report: Path) -> None:
    """The report as Prefect artifacts (call inside a flow run)."""
    create_markdown_artifact(
        report.read_text(), key=artifact_key(f"study-{plan.study.name}-report"), description=str(report)
    )
    png = report.parent / "curves.png"
    if png.is_file():
        url = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()
        create_image_artifact(
            image_url=url,
            key=artifact_key(f"study-{plan.study.name}-curves"),
            description="learning curves, mean ± std over seeds",
        )


def publish_flow(plan: Plan, mix_commits: bool = False) -> WrittenReport:
    """`cfdg study report --prefect`: the report written inside a flow run and published."""

    @flow(name="cfdg-study-report", flow_run_name=f"report-{plan.study.name}")
    def cfdg_study_report() -> WrittenReport:
        written = write_report(plan, mix_commits)
        publish(plan, written.path)
        return written

    return cfdg_study_report()
