"""Faults of the machine during `cfdg run` (issue 29): each ends with one line on the terminal
that says what happened and what to do, nothing is lost, a deterministic fault is not retried,
and a rerun after the cause is gone completes.

All real: a small tmpfs filled up, an immutable directory, two `cfdg run` processes, a plain
`dvc repro` holding the repository, a stage SIGKILLed from outside, a Prefect server killed by
its PID under `cfdg serve` (a study SIGKILLed mid-cell is in test_study.py, on the tiny study).
The runs talk to one real Prefect server (module fixture) instead of each starting an ephemeral
one; each test works on a clone of the suite's finished tiny run and forgets only the stages its
fault needs to run (a stage whose inputs come out byte-identical leaves what follows up to date).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from pipeline_project import clone, dvc, env, finished_project, forget, sh, start_server, stop, tree_digests

CFDG = (sys.executable, "-m", "pipeline")
ROUND2 = ["rollout@2", "fit@2", "materialise@2", "report"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    return finished_project(tmp_path_factory)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The environment that points `cfdg run` at one real Prefect server for the whole module."""
    base = tmp_path_factory.mktemp("prefect-server")
    proc, api = start_server(base / "home", base / "server.log")
    try:
        yield {"PREFECT_API_URL": api, "PREFECT_HOME": str(base / "home")}
    finally:
        stop(proc, signal.SIGTERM)


def cfdg(repo: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return sh(repo, *CFDG, *args, check=False, **extra)


def start_cfdg(repo: Path, log: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [*CFDG, *args],
        cwd=repo,
        env=env(repo, **extra),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def wait_for(what: str, ok: Callable[[], bool], timeout_s: float = 300.0, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


def temps(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob(".*.tmp-*"))


def lock_holder(repo: Path) -> int | None:
    path = repo / ".dvc" / "tmp" / "cfdg.lock"
    try:
        return json.loads(path.read_text()).get("pid")
    except (OSError, ValueError):
        return None


def up_to_date(repo: Path) -> bool:
    return "Data and pipelines are up to date" in dvc(repo, "status").stdout


def rerun_completes(repo: Path, finished: Path, server: dict[str, str]) -> None:
    """Once the cause is gone, a plain `cfdg run` finishes and the artifacts equal an unfaulted run's."""
    again = cfdg(repo, "run", **server)
    assert again.returncode == 0, output(again)[-3000:]
    assert up_to_date(repo)
    same_artifacts(repo, finished)


def same_artifacts(repo: Path, reference: Path) -> None:
    got, want = tree_digests(repo / "artifacts"), tree_digests(reference / "artifacts")
    assert got == want, sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))


# --------------------------------------------------------------------------------------------
# A full disk


@pytest.fixture
def small_fs(tmp_path) -> Iterator[Path]:
    """A real 64 MB file system (tmpfs), mounted for the test; skipped where mounting is not allowed."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small file system here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path, leave: int) -> Path:
    """A file taking all of `fs` but `leave` bytes."""
    filler = fs / "filler"
    free = shutil.disk_usage(fs).free
    with open(filler, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, free - leave)
    return filler


def stage_log(repo: Path, target: str) -> str:
    """The stage's log: in the project, or (no room there) in the temporary directory (removed)."""
    digest = hashlib.sha256(str(repo.resolve()).encode()).hexdigest()[:10]
    fallback = Path(tempfile.gettempdir()) / f"cfdg-logs-{digest}"
    try:
        for folder in (repo / "artifacts" / "logs", fallback):
            if (folder / f"{target}.log").is_file():
                return (folder / f"{target}.log").read_text()
        raise AssertionError(f"no log of {target}")
    finally:
        shutil.rmtree(fallback, ignore_errors=True)


@pytest.mark.slow
def test_full_disk_is_one_line_not_retried_and_a_rerun_completes(finished, server, small_fs):
    repo = clone(finished, small_fs / "project")
    forget(repo, ["rollout@2"])  # what follows stays up to date once rollout@2 is redone identically
    filler = fill(small_fs, leave=100 * 1024)  # room for DVC's own small files, not for round 2's outputs

    failed = cfdg(repo, "run", "--retries", "2", **server)
    assert failed.returncode == 1, output(failed)[-3000:]
    line = last_line(failed)
    assert re.fullmatch(
        r"cfdg: rollout@2: no space left on device writing artifacts/rounds/2/(online\.zarr|agent\.pt) "
        r"\([\d.]+ \w+ free\); "
        r"free space and rerun cfdg run — rounds 0–1 are kept",
        line,
    ), output(failed)[-3000:]
    assert "Traceback" not in output(failed), output(failed)[-3000:]
    assert output(failed).count("Running stage 'rollout@2'") == 1, "a full disk was retried"
    assert temps(repo) == []
    log = stage_log(repo, "rollout@2")
    assert "Traceback" in log and "No space left on device" in log and "while writing artifacts/rounds/2/" in log

    verbose = cfdg(repo, "run", "--verbose", **server)
    assert verbose.returncode == 1
    assert "Traceback" in output(verbose) and "OSError: [Errno 28] No space left on device" in output(verbose)
    room = re.compile(r"\([\d.]+ \w+ free\)")  # the first run's log took some of the room
    assert room.sub("", last_line(verbose)) == room.sub("", line), output(verbose)[-3000:]

    filler.unlink()
    rerun_completes(repo, finished, server)
    assert temps(repo) == []


# --------------------------------------------------------------------------------------------
# A permission, then a stage killed from outside


def _make_unwritable(path: Path) -> Callable[[], None] | str:
    """`path` made unwritable, even for root (immutable); returns the undo, or why it is impossible here."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            return "running as root and `chattr +i` is not available here: cannot make a directory unwritable"
        return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)
    path.chmod(0o555)
    return lambda: path.chmod(0o755)


@pytest.mark.slow
def test_permission_denied_is_one_line_not_retried_and_a_killed_rerun_is_retried(finished, server, tmp_path):
    """A permission fault is deterministic: one line, no retry. The rerun then meets the transient
    kind, the report stage SIGKILLed from outside (as by the OOM killer): not the stage's fault, so
    it is retried and the run completes. One clone and one forgotten stage serve both faults."""
    repo = clone(finished, tmp_path / "project")
    forget(repo, ["report"])
    undo = _make_unwritable(repo / "artifacts" / "report")
    if callable(undo):
        try:
            failed = cfdg(repo, "run", "--retries", "2", **server)
        finally:
            undo()
        assert failed.returncode == 1, output(failed)[-3000:]
        assert re.fullmatch(
            r"cfdg: report: permission denied: artifacts/report/\S+; give this user write access and rerun "
            r"cfdg run — rounds 0–2 are kept",
            last_line(failed),
        ), output(failed)[-3000:]
        assert "Traceback" not in output(failed)
        assert output(failed).count("Running stage 'report'") == 1, "a permission fault was retried"
        assert "Traceback" in (repo / "artifacts" / "logs" / "report.log").read_text()

    # The cause is gone; the rerun's report stage is killed from outside once and retried.
    run = start_cfdg(repo, tmp_path / "run.log", "run", "--retries", "1", **server)

    def stage() -> psutil.Process | None:
        for p in psutil.process_iter(["cmdline", "cwd"]):
            if "stages.report" in " ".join(p.info["cmdline"] or []) and p.info["cwd"] == str(repo):
                return p
        return None

    try:
        wait_for("the report stage to start", lambda: stage() is not None, every_s=0.1)
        os.kill(stage().pid, signal.SIGKILL)
        assert run.wait(timeout=900) == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        stop(run)
    text = (tmp_path / "run.log").read_text()
    assert "report: killed by signal 9" in text and "Retry 1/1" in text, text[-3000:]
    assert up_to_date(repo)
    same_artifacts(repo, finished)
    if not callable(undo):
        pytest.skip(f"the kill was checked; the permission fault was not: {undo}")


# --------------------------------------------------------------------------------------------
# A second command in the same repository, and a lock left by a killed one


@pytest.mark.slow
def test_a_second_command_refuses_at_once_and_a_stale_lock_is_taken_over(finished, server, tmp_path):
    repo = clone(finished, tmp_path / "project")
    forget(repo, ["report"])  # the lock is held for the whole run, up-to-date stages included
    first = start_cfdg(repo, tmp_path / "first.log", "run", **server)
    try:
        wait_for("the first run to take the lock", lambda: lock_holder(repo) == first.pid)
        for argv in (["run"], ["round", "2"], ["study", "run", "configs/study/tiny.yaml"]):
            home = tmp_path / f"prefect-{argv[0]}"
            second = cfdg(repo, *argv, PREFECT_HOME=str(home))
            assert second.returncode == 2, output(second)[-3000:]
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1 and f"PID {first.pid} (`cfdg run`" in lines[0], second.stderr
            assert f"and rerun cfdg {' '.join(argv[:2]) if argv[0] == 'study' else argv[0]}" in lines[0], lines[0]
            assert not home.exists(), "the refused command started Prefect"
        assert first.wait(timeout=900) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        stop(first)
    assert "report written" in (tmp_path / "first.log").read_text()
    assert up_to_date(repo) and lock_holder(repo) is None  # a clean exit empties the lock

    # A run killed mid-way (SIGKILL: no clean-up) leaves its name in the lock file, not the lock.
    forget(repo, ["report"])
    killed = start_cfdg(repo, tmp_path / "killed.log", "run", **server)
    wait_for("the run to take the lock", lambda: lock_holder(repo) == killed.pid)
    stop(killed)
    assert lock_holder(repo) == killed.pid
    resumed = cfdg(repo, "run", **server)
    assert resumed.returncode == 0, output(resumed)[-3000:]
    stale = [ln for ln in resumed.stderr.splitlines() if "stale lock" in ln]
    assert len(stale) == 1 and f"PID {killed.pid}" in stale[0] and "no longer running" in stale[0], resumed.stderr
    assert up_to_date(repo)
    same_artifacts(repo, finished)


@pytest.mark.slow
def test_dvc_holding_the_repository_is_one_line_naming_it_and_not_retried(finished, server, tmp_path):
    repo = clone(finished, tmp_path / "project")
    forget(repo, ROUND2)
    log = tmp_path / "dvc.log"
    plain = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"], cwd=repo, env=env(repo), stdout=open(log, "w"), stderr=subprocess.STDOUT
    )
    try:
        wait_for("dvc repro to run a stage", lambda: "Running stage 'rollout@2'" in log.read_text())
        busy = cfdg(repo, "run", "--retries", "2", **server)
        still_running = plain.poll() is None
        assert plain.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        stop(plain)
    assert still_running, "dvc repro ended before cfdg run looked: nothing was tested"
    assert busy.returncode == 1, output(busy)[-3000:]
    line = last_line(busy)
    assert re.fullmatch(
        r"cfdg: \S+: the repository is (busy: PID \d+ \(dvc repro\) holds \S+|locked by another DVC process \S+); "
        r"wait for it to finish \(or stop it\) and rerun cfdg run.*",
        line,
    ), output(busy)[-3000:]
    assert "PID" not in line or f"PID {plain.pid} " in line, line
    assert "Retry" not in output(busy) and "Traceback" not in output(busy), output(busy)[-3000:]

    rerun_completes(repo, finished, server)


# --------------------------------------------------------------------------------------------
# The Prefect server lost mid-round


@pytest.mark.slow
def test_server_lost_mid_round_stops_cleanly_and_a_rerun_completes(finished, server, tmp_path):
    repo = clone(finished, tmp_path / "project")
    forget(repo, ROUND2)
    home = tmp_path / "prefect"
    lost, api = start_server(home, tmp_path / "server.log")
    at = {"PREFECT_API_URL": api, "PREFECT_HOME": str(home), "CFDG_SERVER_GRACE_S": "5"}
    log = tmp_path / "serve.log"
    serve = start_cfdg(repo, log, "serve", **at)
    try:
        wait_for("serve to register its deployments", lambda: "polling for scheduled runs" in log.read_text())
        sh(repo, *CFDG[:2], "prefect", "deployment", "run", "cfdg-round/cfdg-round", "-p", "k=2", **at)
        wait_for("rollout@2 to start", lambda: "Running stage 'rollout@2'" in log.read_text())
        stop(lost)  # SIGKILL the server by its PID, mid-stage
        assert serve.wait(timeout=600) == 4, log.read_text()[-3000:]
    finally:
        stop(serve)
        stop(lost)
    text = log.read_text()
    ending = [ln for ln in text.splitlines() if ln.strip()][-1]
    assert ending.startswith(f"cfdg: serve: the Prefect server at {api} was lost"), text[-3000:]
    assert f"round 2: the Prefect server at {api} was lost" in text and "stopped cleanly after rollout@2" in text
    assert "failed to reproduce" not in text and "StageFault" not in text, "a stage was blamed"
    # rollout@2 finished and DVC recorded it; what remains is fit@2 onwards.
    assert up_to_date_stage(repo, "rollout@2") and not up_to_date_stage(repo, "fit@2")
    assert temps(repo) == []

    again = cfdg(repo, "round", "2", **server)
    assert again.returncode == 0, output(again)[-3000:]
    assert tree_digests(repo / "artifacts" / "rounds") == tree_digests(finished / "artifacts" / "rounds")


def up_to_date_stage(repo: Path, stage: str) -> bool:
    return "Data and pipelines are up to date" in dvc(repo, "status", stage).stdout


# --------------------------------------------------------------------------------------------
# What the lines are made of: DVC's own messages, as real runs printed them


def test_dvc_errors_are_classified_from_their_real_text(tmp_path):
    from pipeline.faults import classify, kept_text

    cache = (
        "ERROR: failed to transfer 'db837c68' - [Errno 28] No space left on device: "
        f"'{tmp_path}/artifacts/rounds/1/agent.pt' -> '{tmp_path}/.dvc/cache/files/md5/db/.2OZtfW'"
    )
    f = classify(
        "rollout@1", 255, ["Running stage 'rollout@1':", cache, "ERROR: failed to reproduce 'rollout@1'"], tmp_path
    )
    assert (f.kind, f.retry) == ("no-space", False)
    assert f.what.startswith("no space left on device caching artifacts/rounds/1/agent.pt in the DVC cache (")
    busy = [
        f"ERROR: failed to reproduce 'dataset': '{tmp_path}/artifacts/dataset/metrics.json' is busy, "
        "it is being blocked by:",
        "  (PID 9545): /usr/lib/python3/site-packages/dvc/__main__.py repro rollout@1",
        f"If there are no processes with such PIDs, you can manually remove '{tmp_path}/.dvc/tmp/rwlock' "
        "and try again.",
    ]
    f = classify("dataset", 255, busy, tmp_path)
    assert (f.kind, f.retry) == ("busy", False)
    assert f.what == "the repository is busy: PID 9545 (dvc repro rollout@1) holds artifacts/dataset/metrics.json"
    full = "ERROR: unexpected error - database or disk is full"
    assert classify("fit@1", 255, [full], tmp_path).what.startswith("no space left on device for DVC's .dvc/tmp (")
    killed = "ERROR: failed to reproduce 'fit@1': failed to run: python -m stages.fit --round 1, exited with -9"
    f = classify("fit@1", 255, ["Running stage 'fit@1':", killed])
    assert (f.kind, f.what, f.retry) == ("killed", "killed by signal 9", True)
    assert kept_text(["dataset", "pretrain", "rollout@1", "fit@1", "materialise@1", "rollout@2"]) == (
        "rounds 0–1 and rollout@2 are kept"
    )
    assert kept_text(["dataset"]) == "the dataset is kept" and kept_text([]) == ""
