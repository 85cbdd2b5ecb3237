"""Temporary cfdg projects for the pipeline tests: real git, real dvc, the tiny preset.

`finished_project` runs the whole pipeline once per test session (cached here, so the test
modules share it); tests that change anything work on a `clone` of it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("cfdg", "stages", "pipeline", "configs", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "cfdg-test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "cfdg-test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}
_FINISHED: dict[str, Path] = {}
FIRST_RUN_OUTPUT: dict[str, str] = {}


def env(repo: Path, **extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("CFDG_FAIL_STAGE", None)  # never inherit the testing hooks
    e.pop("CFDG_KILL_AT", None)
    e.update(GIT_ENV)
    e.update(PYTHONPATH=str(repo), CFDG_PROGRESS="0", DVC_NO_ANALYTICS="1", DO_NOT_TRACK="1")
    # Tiny networks: one thread each is faster than two threads fighting over 2 shared cores.
    e.setdefault("OMP_NUM_THREADS", "1")
    e.update(extra)
    return e


def sh(repo: Path, *cmd: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    """Run a command in `repo`; on unexpected failure the assertion shows its output."""
    proc = subprocess.run(list(cmd), cwd=repo, env=env(repo, **extra_env), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def dvc(repo: Path, *args: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
    return sh(repo, sys.executable, "-m", "dvc", *args, check=check, **extra_env)


def ran_stages(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage '")]


def commit(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-q", "--allow-empty", "-m", message)


def make_project(dst: Path, preset: str = "configs/tiny.yaml") -> Path:
    """A fresh project: the code and pipeline files, git + dvc initialised, `preset` applied."""
    dst.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=ignore)
        else:
            shutil.copy2(src, dst / name)
    sh(dst, "git", "init", "-q")
    dvc(dst, "init", "-q")
    dvc(dst, "config", "core.analytics", "false")
    if preset:
        sh(dst, sys.executable, "-m", "pipeline", "preset", preset)
    commit(dst, "project")
    return dst


def set_params(repo: Path, **updates: dict) -> None:
    """Merge {section: {key: value}} into the project's params.yaml."""
    path = repo / "params.yaml"
    data = yaml.safe_load(path.read_text())
    for section, values in updates.items():
        data.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def clone(src: Path, dst: Path) -> Path:
    """An independent copy (workspace, git, DVC cache) of a project."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def forget(repo: Path, stages: list[str]) -> None:
    """Remove `stages`' outputs from the workspace and the DVC cache (and the run cache),
    so `dvc repro` has to run them again, as if they had never run."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    cache = repo / ".dvc" / "cache" / "files" / "md5"
    for stage in stages:
        for out in lock[stage]["outs"]:
            path = repo / out["path"]
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            (cache / out["md5"][:2] / out["md5"][2:]).unlink(missing_ok=True)
    shutil.rmtree(repo / ".dvc" / "cache" / "runs", ignore_errors=True)


def finished_project(tmp_path_factory) -> Path:
    """The tiny pipeline run once with plain `dvc repro`, committed; shared, never modify it."""
    if "run" not in _FINISHED:
        repo = make_project(tmp_path_factory.mktemp("finished") / "project")
        proc = dvc(repo, "repro")
        commit(repo, "tiny run")
        FIRST_RUN_OUTPUT["run"] = proc.stdout
        _FINISHED["run"] = repo
    return _FINISHED["run"]


def tree_digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root` (but the untracked `logs/` with timings)."""
    import hashlib

    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "logs"
    }


# --------------------------------------------------------------------------------------------
# A real Prefect server, shared by the tests of a module (each start costs seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def start_server(home: Path, log: Path, timeout_s: float = 300.0) -> tuple[subprocess.Popen, str]:
    """A real Prefect server on a free port, in its own process group (killed by its PID)."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1"},
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while not healthy(api):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError(f"prefect server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    return proc, api


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Kill `proc` and its process group (it was started in a session of its own), by its PID."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
