"""Prefect flows that run the DVC stages: the whole loop, and one generation round.

Every stage runs THROUGH DVC (`dvc repro <stage>`, by pipeline/repro.py, the runner a study's
cells use too), so dvc.lock stays the record of what was produced from what, and a rerun (Prefect
retry, UI "Retry", or plain `dvc repro`) skips every stage whose inputs are unchanged: a failed
round is redone from its failed stage, earlier rounds are left as they are. Prefect adds retries,
logs, a progress bar per round, a table of round metrics and the report's images as artifacts.

Faults (pipeline/faults.py, docs/faults.md): a failed stage is classified, and retried only when
a retry can help (never a full disk, a permission, a bad input or a busy repository); its whole
output goes to `artifacts/logs/<stage>.log`. Between stages a flow checks that its Prefect server
still answers and, if it was lost, stops cleanly there with one line. A flow holds the
repository's run lock (pipeline/runlock.py) while it runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.context import FlowRunContext
from prefect.states import Completed, State

import pipeline  # noqa: F401  (Prefect/DVC environment defaults, before prefect is imported)
from pipeline import faults, runlock, sections
from pipeline.faults import StageFault
from pipeline.repro import repro as dvc_repro
from stages import layout, params
from stages.metrics import quality_headline
from stages.report import curve_point

ROUND_STAGES = faults.ROUND_STAGES
StageFailed = StageFault  # the name before issue 29
REDRAW_EVERY_S = 15.0  # a long stage logs its progress bar this often


@task(
    name="dvc-repro",
    task_run_name="{target}",
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=faults.retry_transient,
)
def repro(target: str, root: str = ".") -> list[str] | State:
    """`dvc repro <target>`: runs the stage (and anything stale upstream); returns the stages it ran.

    When DVC ran nothing (every input unchanged) the task ends in a Completed state named
    "Skipped", so the UI tells a stage DVC skipped from one that ran. A failure raises a
    StageFault, which the task retries only when a retry can help (faults.retry_transient).
    """
    logger = get_run_logger()
    run = dvc_repro(
        Path(root),
        target,
        log=logger.info,
        detail=lambda line: logger.info(line, extra={faults.DETAIL: True}),
        redraw_every_s=REDRAW_EVERY_S,
    )
    if run.fault is not None:
        raise StageFault(run.fault)
    if not run.ran:
        return Completed(name="Skipped", message=f"{target}: up to date, DVC ran nothing", data=run.ran)
    return run.ran


def run_stage(target: str, root: str, retries: int, done: list[str] | None = None) -> list[str]:
    """The `repro` task for `target`: the stages DVC ran ([] when it skipped them); raises if it failed.

    `done`: the targets this command finished before (the fault's "rounds 0–1 are kept"); `target`
    is added to it once it succeeds.
    """
    done = [] if done is None else done
    state = repro.with_options(retries=retries)(target, root, return_state=True)
    try:
        ran = state.result()
    except StageFault as e:
        e.fault.done = list(done)
        raise
    done.append(target)
    return ran


def _rerun(default: str) -> str:
    """What the user reruns: the CLI's command, or (a deployment's flow run) `default`."""
    return os.environ.get(faults.COMMAND_ENV) or default


@contextlib.contextmanager
def _flow_guard(root: Path, where: str, rerun: str, done: list[str]) -> Iterator[None]:
    """A flow's frame: the repository's run lock, a quiet console, and one line for what ends it.

    A StageFault in a deployment's flow run (no CLI to print it) is logged as its one line; an
    error talking to a Prefect server that is gone stops the process cleanly with one line.
    """
    faults.quiet_console()
    try:
        with runlock.held(root, os.environ.get(faults.COMMAND_ENV) or f"flow run {where}"):
            yield
    except StageFault as e:
        if faults.COMMAND_ENV not in os.environ and not _is_subflow():
            get_run_logger().error("cfdg: %s", e.fault.line(rerun))
        raise
    except Exception as e:
        if faults.is_connection_error(e) and (url := faults.api_url()) and (reason := faults.server_lost(url)):
            faults.stop_for_lost_server(url, reason, where, done, rerun)
        raise


def _is_subflow() -> bool:
    ctx = FlowRunContext.get()
    return bool(ctx and ctx.flow_run and ctx.flow_run.parent_task_run_id)


def _server_or_stop(where: str, rerun: str, done: list[str]) -> None:
    """Between stages: if the Prefect server stopped answering, stop here, cleanly, with one line."""
    url = faults.api_url()
    if url and (reason := faults.server_lost(url)):
        faults.stop_for_lost_server(url, reason, where, done, rerun)


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def round_row(root: Path, k: int) -> dict[str, Any]:
    """One row of the round-metrics table: score after the round and the JS divergences."""
    path = layout.score_metrics(k, root)
    row: dict[str, Any] = {"round": k}
    try:
        p = curve_point(_json(path), path)
        row.update(env_steps=p.env_steps, score=round(p.score, 2))
    except Exception:  # a round not yet run, or metrics without a score
        row.update(env_steps=None, score=None)
    digits = {"next_state_rel_error": 4}
    for name, value in quality_headline(_json(layout.round_dir(k, root) / layout.QUALITY)).items():
        row[name] = None if value is None else round(value, digits.get(name, 3))
    return row


_IMAGE_LINK = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+\.png)\)")


def inline_images(markdown: str, folder: Path) -> str:
    """`markdown` with its relative PNG links replaced by data URIs, so the images render in the
    Prefect UI, which cannot follow a link relative to the report on this machine's disk."""

    def embed(m: re.Match[str]) -> str:
        path = folder / m["src"]
        if not path.is_file():
            return m[0]
        return f"![{m['alt']}](data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()})"

    return _IMAGE_LINK.sub(embed, markdown)


@flow(name="cfdg-round", flow_run_name="round-{k}", log_prints=True)
def cfdg_round(k: int, root: str = ".", retries: int = 1) -> dict[str, Any]:
    """One generation round k: rollout@k -> fit@k -> materialise@k, each through DVC."""
    logger = get_run_logger()
    base = Path(root)
    where, rerun, done = f"round {k}", _rerun(f"the flow run (or `cfdg round {k}` in {base})"), []
    with _flow_guard(base, where, rerun, done):
        table = params.rounds(params.read_params(base / "params.yaml"), base / "params.yaml")
        if k not in table:
            raise ValueError(f"round {k} is not in the rounds table of {base / 'params.yaml'} (rounds {list(table)})")
        progress = create_progress_artifact(
            0.0, key=f"round-{k}-progress", description=f"round {k}: rollout, fit, materialise"
        )
        ran: list[str] = []
        for i, stage in enumerate(ROUND_STAGES):
            did = run_stage(f"{stage}@{k}", root, retries, done)
            _server_or_stop(where, rerun, done)
            logger.info("%s@%d: %s", stage, k, f"ran {did}" if did else "up to date")
            ran += did
            update_progress_artifact(progress, 100.0 * (i + 1) / len(ROUND_STAGES))
        row = round_row(base, k)
        create_table_artifact([row], key=f"round-{k}-metrics", description=f"round {k} metrics")
    return {**row, "ran": ran}


@flow(name="cfdg-run", log_prints=True)
def cfdg_run(root: str = ".", retries: int = 1) -> str:
    """The whole loop: dataset, pretrain, every round of params.yaml, report. Returns the report path."""
    logger = get_run_logger()
    base = Path(root)
    rerun, done = _rerun(f"the flow run (or `cfdg run` in {base})"), []
    with _flow_guard(base, "cfdg run", rerun, done):
        checked = sections.load_all(base / "params.yaml")  # every section validated before anything runs
        rounds = list(checked.rounds)
        overall = create_progress_artifact(0.0, key="cfdg-run-progress", description="rounds completed")
        for target in ("dataset", "pretrain"):
            run_stage(target, root, retries, done)
            _server_or_stop(target, rerun, done)
        rows = [round_row(base, 0)]
        for i, k in enumerate(rounds):
            try:
                row = cfdg_round(k, root, retries)
            except StageFault as e:
                e.fault.done = [*done, *e.fault.done]
                raise
            done += [f"{s}@{k}" for s in ROUND_STAGES]
            rows.append({key: value for key, value in row.items() if key != "ran"})
            update_progress_artifact(overall, 100.0 * (i + 1) / len(rounds))
            create_table_artifact(rows, key="cfdg-round-metrics", description="metrics of the rounds so far")
        run_stage("report", root, retries, done)
        report_dir = base / layout.REPORT_DIR
        report_md = report_dir / "report.md"
        if report_md.is_file():  # one artifact with the pictures inside, not a base64 URL per picture
            text = inline_images(report_md.read_text(), report_dir)
            create_markdown_artifact(text, key="cfdg-report", description=str(report_md.resolve()))
        logger.info("report: %s", report_md.resolve())
    return str(report_md.resolve())


def deployments(root: str) -> list:
    """The two deployments `cfdg serve` registers: the whole run, and one round."""
    return [
        cfdg_run.to_deployment(name="cfdg-run", parameters={"root": root}, description="the whole CFDG loop"),
        cfdg_round.to_deployment(
            name="cfdg-round", parameters={"root": root, "k": 1}, description="one generation round k"
        ),
    ]
