"""A study past one machine: its cells as flow runs of a deployment on a Prefect work pool.

Each machine starts one worker (docs/studies.md, "Studies on many machines"):

    PREFECT_API_URL=http://SERVER:4200/api prefect worker start --pool cfdg-study --type process

The worker clones the project's git repository at the study's commit (code from git) and runs
`cfdg_pool_cell`, which builds the cell's workspace on that machine (a clone, the cell's
params.yaml, the machine's DVC cache), runs its stages with `dvc repro --pull` (stages another
machine already computed and pushed come from the DVC remote's run cache instead of being
recomputed), then `dvc push --run-cache` (artifacts through the DVC remote: a local
directory, S3 or SSH). The cell's dvc.lock and stage timings come back as a Prefect artifact.
The submitting machine (`cfdg study run FILE --pool cfdg-study --remote URL`) writes each lock
into the cell's local workspace and `dvc pull`s it, so the report is built exactly as for a
study run on one machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.runner.storage import GitRepository

import pipeline  # noqa: F401  (Prefect/DVC environment defaults)
from cfdg.errors import ConfigError
from cfdg.io import atomic_write_json
from pipeline.repro import DVC
from pipeline.study.cell import execute_cell
from pipeline.study.keys import stage_keys, stage_sections
from pipeline.study.report import write_report
from pipeline.study.spec import Cell, artifact_key
from pipeline.study.workspace import Plan, cache_dir, cell_dir, prepare_workspace, state_path

DEPLOYMENT = "cfdg-study-cell"
FLOW = "cfdg-study-cell"
ENTRYPOINT = "pipeline/study/pool.py:cfdg_pool_cell"
REMOTE_NAME = "study"
RESULT_FENCE = "```json"
# Where a worker machine keeps cell workspaces and its DVC cache (shared by its cells).
WORKDIR_ENV = "CFDG_STUDY_WORKDIR"
CACHE_ENV = "CFDG_STUDY_CACHE"


def _home_cache(*parts: str) -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cfdg" / Path(*parts)


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} (in {cwd}) exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def worker_workspace(repo: str, commit: str, ws: Path, cache: Path, remote: str, params_yaml: str) -> Path:
    """The cell's workspace on this worker: a clone at `commit`, the machine's cache, the study remote."""
    if not (ws / ".git").exists():
        ws.parent.mkdir(parents=True, exist_ok=True)
        _run(["git", "clone", "--quiet", repo, str(ws)], ws.parent)
    if _run(["git", "rev-parse", "HEAD"], ws).strip() != commit:
        _run(["git", "fetch", "--quiet", "origin"], ws)
        _run(["git", "checkout", "--quiet", "--force", "--detach", commit], ws)
    cache.mkdir(parents=True, exist_ok=True)
    _run([*DVC, "cache", "dir", "--local", str(cache)], ws)
    _run([*DVC, "remote", "add", "--local", "--force", "--default", REMOTE_NAME, remote], ws)
    (ws / "params.yaml").write_text(params_yaml)
    return ws


@flow(name=FLOW, flow_run_name="{name}", log_prints=True)
def cfdg_pool_cell(
    name: str, study: str, repo: str, commit: str, params_yaml: str, remote: str, stage_retries: int = 1
) -> dict[str, Any]:
    """One study cell on whichever worker picked it up; artifacts pushed to the DVC remote."""
    logger = get_run_logger()
    params = yaml.safe_load(params_yaml)
    cell = Cell(name, "", "", "", "", int(params.get("seed", 0)), None, params)
    base = Path(os.environ.get(WORKDIR_ENV) or _home_cache("study-work"))
    cache = Path(os.environ.get(CACHE_ENV) or _home_cache("dvc-cache"))
    ws = worker_workspace(repo, commit, base / study / name, cache, remote, params_yaml)
    logger.info(
        "cell %s on %s (worker pid %d): workspace %s, cache %s", name, socket.gethostname(), os.getppid(), ws, cache
    )
    keys = stage_keys(cell, stage_sections(ws / "dvc.yaml"), commit)
    progress_id = create_progress_artifact(0.0, key=artifact_key(f"cell-{study}-{name}"), description=f"cell {name}")
    state_file = base / study / f"{name}.json"
    started = time.time()
    state = execute_cell(
        cell,
        ws,
        state_file,
        commit,
        keys,
        None,
        cache.parent / "study-locks",
        logger.info,
        lambda pct: update_progress_artifact(progress_id, pct),
        pull=True,
        stage_retries=stage_retries,
    )
    _run([*DVC, "push", "--run-cache"], ws)
    result = {
        "cell": name,
        "state": state,
        "dvc_lock": (ws / "dvc.lock").read_text(),
        "host": socket.gethostname(),
        "worker_pid": os.getppid(),
        "started": started,
        "finished": time.time(),
    }
    create_markdown_artifact(
        f"Cell `{name}`: dvc.lock and stage timings (read by `cfdg study run --pool`).\n\n"
        f"{RESULT_FENCE}\n{json.dumps(result, indent=1)}\n```\n",
        key=artifact_key(f"result-{study}-{name}"),
        description=f"cell {name}: dvc.lock",
    )
    return {k: v for k, v in result.items() if k != "dvc_lock"}


# ---------------------------------------------------------------------------------------------
# The submitting side


def default_remote(root: Path) -> str | None:
    """The URL of the project's default DVC remote, if it has one."""
    proc = subprocess.run([*DVC, "remote", "list"], cwd=root, capture_output=True, text=True)
    default = subprocess.run([*DVC, "remote", "default"], cwd=root, capture_output=True, text=True).stdout.strip()
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == default:
            return parts[1]
    return None


def ensure_deployment(pool: str, repo: str, commit: str) -> str:
    """The cell deployment on `pool`, code from `repo` at `commit`; creates a process pool if missing."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    source = GitRepository(url=repo, commit_sha=commit, pull_interval=None)
    remote_flow = cfdg_pool_cell.from_source(source=source, entrypoint=ENTRYPOINT)
    remote_flow.deploy(name=DEPLOYMENT, work_pool_name=pool, print_next_steps=False, ignore_warnings=True)
    return f"{FLOW}/{DEPLOYMENT}"


def _result(client: Any, flow_run_id: Any, key: str) -> dict[str, Any] | None:
    """The result a cell's flow run left in its Markdown artifact (None: it left none)."""
    arts = client.read_artifacts(
        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
    )
    for art in arts:
        text = str(art.data)
        if RESULT_FENCE in text:
            return json.loads(text.split(RESULT_FENCE, 1)[1].rsplit("```", 1)[0])
    return None


def run_on_pool(
    plan: Plan,
    pool: str = "cfdg-study",
    remote: str | None = None,
    repo: str | None = None,
    poll_s: float = 2.0,
) -> dict[str, Any]:
    """Submit the plan's pending cells as flow runs, wait, bring each finished cell's outputs home, report."""
    remote = remote or default_remote(plan.root)
    if not remote:
        raise ConfigError(f"{plan.root}: --pool needs a DVC remote the workers can reach (--remote URL, or a default)")
    if "://" not in remote and not Path(remote).is_absolute():
        remote = str((plan.root / remote).resolve())
    repo = repo or str(plan.root)
    pending = plan.pending()
    skipped = [c.name for c in plan.study.cells if c not in pending]
    name = ensure_deployment(pool, repo, plan.commit) if pending else ""
    atomic_write_json(plan.sdir / "study.json", {**plan.record(), "pool": pool, "remote": remote, "repo": repo})
    runs = {}
    for c in pending:
        params = {
            "name": c.name,
            "study": plan.study.name,
            "repo": repo,
            "commit": plan.commit,
            "params_yaml": c.params_yaml,
            "remote": remote,
        }
        runs[c.name] = run_deployment(name, parameters=params, timeout=0, flow_run_name=c.name).id
    failed: dict[str, str] = {}
    cache = cache_dir(plan.root)
    with get_client(sync_client=True) as client:
        waiting = dict(runs)
        while waiting:
            time.sleep(poll_s)
            for cname, run_id in list(waiting.items()):
                fr = client.read_flow_run(run_id)
                if not fr.state or not fr.state.is_final():
                    continue
                del waiting[cname]
                cell = plan.study.cell(cname)
                if not fr.state.is_completed():
                    failed[cname] = f"flow run {fr.name} ended {fr.state.type.value}: {fr.state.message or ''}".strip()
                    continue
                result = _result(client, run_id, artifact_key(f"result-{plan.study.name}-{cname}"))
                if result is None:
                    failed[cname] = f"flow run {fr.name} completed without its result artifact"
                    continue
                ws = prepare_workspace(plan.root, cell_dir(plan.sdir, cell), plan.commit, cache, cell.params_yaml)
                (ws / "dvc.lock").write_text(result["dvc_lock"])
                subprocess.run(
                    [*DVC, "remote", "add", "--local", "--force", "--default", REMOTE_NAME, remote],
                    cwd=ws,
                    check=True,
                    capture_output=True,
                )
                pull = subprocess.run([*DVC, "pull"], cwd=ws, capture_output=True, text=True)
                if pull.returncode != 0:
                    failed[cname] = f"dvc pull from {remote} failed: {pull.stderr.strip()[-300:]}"
                    continue
                state = {
                    **result["state"],
                    "host": result["host"],
                    "worker_pid": result["worker_pid"],
                    "started": result["started"],
                    "finished": result["finished"],
                    "flow_run": str(run_id),
                }
                atomic_write_json(state_path(plan.sdir, cell), state)
                plan.export(cell)
    report = write_report(plan).path
    return {"cells": len(plan.study.cells), "skipped": skipped, "failed": failed, "report": str(report), "runs": runs}
