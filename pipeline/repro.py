"""The one `dvc repro` runner that the flows (pipeline/flows.py) and a study's cells share.

Both run a stage the same way: `dvc repro [--pull] <target>` in a workspace, its output streamed
line by line to a logger (from a failure's first line on to a second, `detail`, logger: the
traceback is for the log file and --verbose, not the terminal), the whole output written to
`artifacts/logs/<target>.log`, a failure classified into one Fault (pipeline/faults.py), and the
peak memory of the stage's processes sampled (a study's compute table reports it). What differs
is only what each passes: the flows log a progress bar every 15 s, a study cell its own
environment and, on a work pool, `--pull`.
"""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil

from pipeline import faults
from pipeline.faults import Fault
from stages.runner import PROGRESS_ENV

# DVC in this interpreter, so a workspace runs the DVC the project installed.
DVC = (sys.executable, "-m", "dvc")
# DVC's advice lines after each stage; noise in a flow's log.
QUIET = (
    "To track the changes with git",
    "git add ",
    "To enable auto staging",
    "dvc config core.autostage",
    "Use `dvc push`",
)
MEMORY_SAMPLE_S = 0.2


def split_output(stream: Any) -> Iterator[tuple[str, bool]]:
    """(line, is_redraw) from a byte stream as it arrives; tqdm redraws end in '\\r', not '\\n'."""
    decode = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buf = ""
    while chunk := stream.read1(4096):
        buf += decode.decode(chunk)
        while (cut := min((i for i in (buf.find("\r"), buf.find("\n")) if i >= 0), default=-1)) >= 0:
            yield buf[:cut], buf[cut] == "\r"
            buf = buf[cut + 1 :]
    if buf:
        yield buf, False


def ran_stages(lines: list[str]) -> list[str]:
    """Stages DVC ran, from its lines "Running stage 'fit@2':"."""
    return [line.split("'")[1] for line in lines if line.startswith("Running stage '")]


def restored_stages(lines: list[str]) -> list[str]:
    """Stages DVC checked out of the run cache instead ("Stage 'x' is cached - skipping run")."""
    return [ln.split("'")[1] for ln in lines if "is cached - skipping run" in ln and ln.startswith("Stage '")]


@dataclasses.dataclass
class StageRun:
    """One `dvc repro <target>`: exit code, output, wall time, the peak memory of its process tree,
    where its output was written, and (when it failed) its classified fault."""

    target: str
    code: int
    lines: list[str]
    wall_s: float
    max_rss_mb: float
    log: str | None = None
    fault: Fault | None = None

    @property
    def ran(self) -> list[str]:
        return ran_stages(self.lines)

    @property
    def restored(self) -> list[str]:
        return restored_stages(self.lines)


class _PeakMemory:
    """The largest summed RSS of a process's descendants, sampled in a thread: the stage itself,
    not DVC's own (larger) footprint, which rusage cannot tell apart (nor cells run in threads)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        try:
            parent = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._stop.wait(MEMORY_SAMPLE_S):
            total = 0
            try:
                for child in parent.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        total += child.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20


def repro(
    root: Path,
    target: str,
    *,
    env: Mapping[str, str] | None = None,
    pull: bool = False,
    log: Callable[[str], None] | None = None,
    detail: Callable[[str], None] | None = None,
    redraw_every_s: float | None = None,
    note: str = "",
) -> StageRun:
    """Run `dvc repro [--pull] <target>` in `root`, passing each output line to `log` as it comes.

    The stages' progress bars are forced on (their stderr is a pipe here); with `redraw_every_s`
    the latest one is logged that often, so a long stage shows how far it is. The whole output
    goes to the stage's log file, headed by the command, `note`, the exit code and the time; a
    failure comes back classified (`StageRun.fault`, its `log` set), for the caller to raise or
    retry as its own rules say.
    """
    environ = dict(os.environ if env is None else env)
    environ.setdefault(PROGRESS_ENV, "1")
    args = ["repro", *(["--pull"] if pull else []), target]
    start = time.monotonic()
    proc = subprocess.Popen([*DVC, *args], cwd=root, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    memory = _PeakMemory(proc.pid)
    lines: list[str] = []
    last_redraw = 0.0
    failing = False
    assert proc.stdout is not None
    for raw, redraw in split_output(proc.stdout):
        line = raw.rstrip()
        if not line.strip():
            continue
        if redraw:
            now = time.monotonic()
            if log is not None and redraw_every_s is not None and now - last_redraw >= redraw_every_s:
                last_redraw = now
                log(line.strip())
            continue
        lines.append(line)
        failing = failing or faults.failure_begins(line)
        sink = detail if failing and detail is not None else log
        if sink is not None and not line.strip().startswith(QUIET):
            sink(line)
    code = proc.wait()
    run = StageRun(target, code, lines, time.monotonic() - start, memory.stop())
    about = ", ".join(x for x in (note, f"exit code {code}", time.ctime()) if x)
    run.log = faults.write_stage_log(Path(root), target, lines, f"$ dvc {' '.join(args)}    # {about}")
    if code != 0:
        run.fault = faults.classify(target, code, lines, Path(root))
        run.fault.log = run.log
    return run
