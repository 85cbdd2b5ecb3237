"""A failed stage told in one line, and whether running it again can help (docs/faults.md).

A stage that fails prints one line first (stages/runner.py: `stage fit@2: error: ...` for a bad
input, `stage fit@2: fault: <kind>: ...` for a fault of the machine or a crash), DVC adds its own
`ERROR:` lines (a busy repository, a full disk while caching). `classify` reads them into a
`Fault`: which stage, what happened (naming the path), what to do, and whether a retry can cure
it. A full disk, a permission, a read-only file system, a bad input or a lock held by a live
process stay the same on a second try, so the flows never retry them; a crash, a killed stage or
anything unrecognised may be transient and is retried as before.

The terminal gets the one line; the stage's whole output, traceback included, goes to
`artifacts/logs/<stage>.log` and the Prefect UI, and `--verbose` (CFDG_VERBOSE=1) prints it too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cfdg.io import atomic_write_text
from stages.runner import ERRNO_KINDS, free_bytes, human_bytes

ROUND_STAGES = ("rollout", "fit", "materialise")
LOG_DIR = Path("artifacts/logs")
VERBOSE_ENV = "CFDG_VERBOSE"
DETAIL = "cfdg_detail"  # a log record's flag: part of a failure's detail, for the UI and --verbose only

# Faults a retry cannot cure: the same input, the same disk, the same live lock holder.
DETERMINISTIC = {"bad-input", "no-space", "permission", "read-only", "busy"}
ADVICE = {
    "bad-input": "fix it and rerun {command}",
    "no-space": "free space and rerun {command}",
    "permission": "give this user write access and rerun {command}",
    "read-only": "make the file system writable (or move the project) and rerun {command}",
    "busy": "wait for it to finish (or stop it) and rerun {command}",
    "killed": "rerun {command} (out of memory? see dmesg)",
    "crash": "the traceback is in {log}; rerun {command} once the cause is fixed",
    "unknown": "the output is in {log}; rerun {command} once the cause is fixed",
}

_STAGE_ERROR = re.compile(r"^stage (?P<stage>\S+): error: (?P<what>.*)$")
_STAGE_FAULT = re.compile(r"^stage (?P<stage>\S+): fault: (?P<kind>[a-z-]+): (?P<what>.*)$")
_DVC_STAGE = re.compile(r"failed to reproduce '(?P<stage>[^']+)'")
_BLOCKER = re.compile(r"^\s*\(PID (?P<pid>\d+)\): (?P<cmd>.*)$")
_BUSY_PATH = re.compile(r"'(?P<path>[^']+)' is busy")
_ERRNO = re.compile(
    r"\[Errno (?P<errno>\d+)\] (?P<strerror>[^:']+)(?::\s*'(?P<path>[^']*)')?(?:\s*->\s*'(?P<to>[^']*)')?"
)
_EXITED = re.compile(r"exited with (?P<code>-?\d+)")


@dataclasses.dataclass
class Fault:
    """A failed `dvc repro <target>`: the stage at fault, its kind, what happened, where its log is."""

    target: str
    stage: str
    kind: str
    what: str
    log: str | None = None
    done: list[str] = dataclasses.field(default_factory=list)  # targets finished before it, by this command

    @property
    def retry(self) -> bool:
        """Whether running the stage again may succeed."""
        return self.kind not in DETERMINISTIC

    def line(self, command: str = "cfdg run") -> str:
        """The one line: `rollout@2: no space left on device writing X (12 MB free); free space and
        rerun cfdg run — rounds 0–1 are kept` (without the leading `cfdg: `)."""
        advice = ADVICE.get(self.kind, ADVICE["unknown"]).format(command=command, log=self.log or "the Prefect UI")
        kept = kept_text(self.done)
        return f"{self.stage}: {self.what}; {advice}" + (f" — {kept}" if kept else "")


class StageFault(RuntimeError):
    """`dvc repro <target>` failed; carries the classified Fault (str: what happened, one line)."""

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault)
        self.fault = fault

    def __str__(self) -> str:
        return f"{self.fault.stage}: {self.fault.what}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


def classify(target: str, code: int, lines: Sequence[str], root: Path | None = None) -> Fault:
    """The Fault of a `dvc repro <target>` that exited `code` with output `lines`."""
    stage = target
    for line in lines:
        if line.startswith("Running stage '"):
            stage = line.split("'")[1]
    for line in lines:
        if m := _STAGE_ERROR.match(line):
            return Fault(target, m["stage"], "bad-input", m["what"].removeprefix(f"{m['stage']}: "))
        if m := _STAGE_FAULT.match(line):
            return Fault(target, m["stage"], m["kind"], m["what"])
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    for i, line in enumerate(lines):
        if "is busy, it is being blocked by" in line:
            return Fault(target, _dvc_stage(line, stage), "busy", _busy_text(line, lines[i + 1 :], root))
        if line.startswith("ERROR:") and "Unable to acquire lock" in line:
            return Fault(target, stage, "busy", "the repository is locked by another DVC process (.dvc/tmp/lock)")
    for line in errors:
        if (m := _ERRNO.search(line)) and (kind := ERRNO_KINDS.get(int(m["errno"]))):
            return Fault(target, _dvc_stage(line, stage), kind, _errno_text(kind, m, root))
        if "database or disk is full" in line:  # DVC's state database (sqlite) in .dvc/tmp
            free = free_bytes(root or Path.cwd())
            room = "" if free is None else f" ({human_bytes(free)} free)"
            return Fault(
                target, _dvc_stage(line, stage), "no-space", f"no space left on device for DVC's .dvc/tmp{room}"
            )
    for line in errors:
        if "failed to run" in line and (m := _EXITED.search(line)) and int(m["code"]) < 0:
            return Fault(target, _dvc_stage(line, stage), "killed", f"killed by signal {-int(m['code'])}")
    last = errors[-1] if errors else (lines[-1] if lines else f"dvc repro exited {code}")
    return Fault(target, _dvc_stage(last, stage), "unknown", last.removeprefix("ERROR:").strip())


def _dvc_stage(line: str, default: str) -> str:
    m = _DVC_STAGE.search(line)
    return m["stage"] if m else default


def _shown(path: str, root: Path | None) -> str:
    if root is None:
        return path
    with contextlib.suppress(ValueError, OSError):
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    return path


def _busy_text(line: str, after: Sequence[str], root: Path | None) -> str:
    holders = [m for ln in after if (m := _BLOCKER.match(ln))]
    path = _BUSY_PATH.search(line)
    where = f" holds {_shown(path['path'], root)}" if path else " holds the repository"
    if not holders:
        return f"the repository is busy: another DVC process{where}"
    who = ", ".join(f"PID {m['pid']} ({_short_cmd(m['cmd'])})" for m in holders)
    return f"the repository is busy: {who}{where}"


def _short_cmd(cmd: str) -> str:
    """`/x/site-packages/dvc/__main__.py repro fit@1` -> `dvc repro fit@1`."""
    words = cmd.split()
    if words and words[0].endswith("dvc/__main__.py"):
        words[0] = "dvc"
    return " ".join(words)


def _errno_text(kind: str, m: re.Match[str], root: Path | None) -> str:
    path = _shown(m["path"], root) if m["path"] else None
    if kind == "no-space":
        free = free_bytes(Path(m["to"] or m["path"]) if m["path"] else (root or Path.cwd()))
        room = "" if free is None else f" ({human_bytes(free)} free)"
        if m["to"]:  # DVC copying an output into its cache: `'out' -> '.dvc/cache/...'`
            return f"no space left on device caching {path} in the DVC cache{room}"
        return f"no space left on device{' writing ' + path if path else ''}{room}"
    what = "read-only file system" if kind == "read-only" else "permission denied"
    return f"{what}{': ' + path if path else ''}"


def kept_text(done: Iterable[str]) -> str:
    """What a failed command leaves complete: `rounds 0–1 are kept`, `rounds 0–1 and rollout@2 are kept`."""
    done = list(dict.fromkeys(done))
    complete = [0] if "pretrain" in done else []
    by_round: dict[int, set[str]] = {}
    for t in done:
        name, _, k = t.partition("@")
        if k.isdigit():
            by_round.setdefault(int(k), set()).add(name)
    complete += sorted(k for k, names in by_round.items() if names >= set(ROUND_STAGES))
    partial = [t for t in done if "@" in t and int(t.partition("@")[2]) not in complete]
    parts = []
    if complete:
        parts.append(f"round {complete[0]}" if len(complete) == 1 else f"rounds {_ranges(complete)}")
    parts += partial
    if not parts:
        return "the dataset is kept" if "dataset" in done else ""
    return f"{' and '.join(parts)} {'is' if len(parts) == 1 and len(complete) <= 1 else 'are'} kept"


def _ranges(ks: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> '0–2, 5'."""
    out: list[str] = []
    start = prev = ks[0]
    for k in [*ks[1:], None]:
        if k is not None and k == prev + 1:
            prev = k
            continue
        out.append(f"{start}–{prev}" if prev > start else f"{start}")
        if k is not None:
            start = prev = k
    return ", ".join(out)


def failure_begins(line: str) -> bool:
    """A line that opens a failure's detail: the stage's own line, or a DVC error."""
    return line.startswith("ERROR:") or bool(_STAGE_ERROR.match(line) or _STAGE_FAULT.match(line))


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry a failed stage only if its fault may be transient."""
    exc = getattr(state, "data", None)
    return exc.fault.retry if isinstance(exc, StageFault) else True


# ---------------------------------------------------------------------------------------------
# The stage's log file


def write_stage_log(root: Path, target: str, lines: Sequence[str], header: str) -> str | None:
    """The whole output of `dvc repro <target>` in `artifacts/logs/<target>.log` (the last attempt).

    On a full or read-only disk the log goes to the temporary directory instead; returns where it
    went, relative to `root` when inside it, or None when it could be written nowhere.
    """
    text = "\n".join([header, *lines]) + "\n"
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    for folder in (root / LOG_DIR, Path(tempfile.gettempdir()) / f"cfdg-logs-{digest}"):
        try:
            path = atomic_write_text(folder / f"{target}.log", text)
        except OSError:
            continue
        return _shown(str(path), root)
    return None


# ---------------------------------------------------------------------------------------------
# The terminal: one line per fault unless --verbose


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


_MUTED = False


def mute_console() -> None:
    """No more INFO lines on the terminal: cfdg's closing line stays the last one (Prefect says
    `Stopping temporary server` at exit). Only where the console is quiet (not --verbose)."""
    global _MUTED
    _MUTED = True


class _QuietFilter(logging.Filter):
    """Console only: drop a failure's detail and Prefect's restatements of a fault cfdg reports itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, DETAIL, False) or (_MUTED and record.levelno < logging.WARNING):
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, StageFault):
            return False
        if "Finished in state Failed(" not in str(record.msg):
            return True
        message = record.getMessage()
        return not any(c.__name__ in message for c in (StageFault, *StageFault.__subclasses__()))


class _NoTraceback(logging.Formatter):
    """Format with the wrapped formatter, leaving out the traceback (the record keeps it for other handlers)."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def quiet_console() -> None:
    """Keep tracebacks and failure detail off the terminal (they stay in the logs and the UI).

    Applied to every handler that writes to the terminal; a no-op with --verbose. Idempotent.
    """
    if verbose():
        return
    import sys

    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.FileHandler) or stream not in (
                sys.stderr,
                sys.stdout,
                sys.__stderr__,
                sys.__stdout__,
            ):
                continue
            if not any(isinstance(f, _QuietFilter) for f in handler.filters):
                handler.addFilter(_QuietFilter())
                handler.setFormatter(_NoTraceback(handler.formatter))


# ---------------------------------------------------------------------------------------------
# The Prefect server going away mid-run

EXIT_SERVER_LOST = 4
SERVER_GRACE_ENV = "CFDG_SERVER_GRACE_S"  # how long the server may not answer before it counts as lost
COMMAND_ENV = "CFDG_COMMAND"  # the cfdg command a flow runs under (set by the CLI), for its messages


def health(url: str, timeout: float = 3.0) -> str | None:
    """None if the Prefect API at `url` answers its health check, else why not (one line)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as e:
        return f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return str(getattr(reason, "strerror", None) or reason).lower()
    return None


def api_url() -> str | None:
    """The API this process's flows report to (a server, or the ephemeral one); None if unknown."""
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            return str(client.api_url).rstrip("/")
    except Exception:  # no Prefect context, or no client could be made: nothing to watch
        return None


def server_lost(url: str | None, grace_s: float | None = None) -> str | None:
    """Why the server at `url` is gone, after it failed to answer for `grace_s`; None if it answers.

    A hiccup shorter than the grace (a restart, a busy moment) is not a loss: Prefect's client
    retries those by itself.
    """
    import time

    if url is None:
        return None
    grace = float(os.environ.get(SERVER_GRACE_ENV, "20")) if grace_s is None else grace_s
    deadline = time.monotonic() + grace
    while (reason := health(url)) is not None:
        if time.monotonic() >= deadline:
            return reason
        time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    return None


def stop_for_lost_server(url: str, reason: str, where: str, done: Sequence[str], rerun: str) -> None:
    """Say the server was lost, in one line, and end this process at once (exit code 4).

    Called between stages only, so no stage is cut: the one that ran has finished and DVC has
    recorded it. Exiting at once matters: Prefect's engine would otherwise retry reporting to
    the dead server for minutes and print a traceback for every try.
    """
    import sys

    from pipeline import runlock

    kept = kept_text(done)
    after = f" after {done[-1]}" if done else ""
    line = (
        f"cfdg: {where}: the Prefect server at {url} was lost ({reason}); stopped cleanly{after}, no stage "
        f"failed; `dvc status` lists what remains: start the server again and rerun {rerun}"
        + (f" — {kept}" if kept else "")
    )
    sys.stdout.flush()
    os.write(2, (line + "\n").encode())  # not print(): a flow's log_prints would make it a log record
    runlock.release_all()
    os._exit(EXIT_SERVER_LOST)


def watch_server(url: str, what: str, every_s: float = 5.0) -> None:
    """`cfdg serve`: when its server is lost, let the running flow runs stop at their stage's end,
    then end with one line (exit code 4) instead of Prefect's endless reconnection tracebacks."""
    import sys
    import threading
    import time

    import psutil

    def flow_runs(me: psutil.Process) -> list[int]:
        return [p.pid for p in me.children() if p.status() != psutil.STATUS_ZOMBIE]

    def watch() -> None:
        while True:
            time.sleep(every_s)
            reason = server_lost(url)
            if reason is None:
                continue
            me = psutil.Process()
            if running := flow_runs(me):
                print(
                    f"cfdg: {what}: the Prefect server at {url} stopped answering ({reason}); waiting for the "
                    f"flow run(s) in PID {', '.join(map(str, running))} to finish their running stage",
                    file=sys.stderr,
                    flush=True,
                )
            while flow_runs(me):
                time.sleep(1.0)
            print(
                f"cfdg: {what}: the Prefect server at {url} was lost ({reason}); no stage was cut and no flow "
                "run is left running: start the server again (cfdg server), then cfdg serve, and rerun the "
                "interrupted flow run; `dvc status` lists what remains",
                file=sys.stderr,
                flush=True,
            )
            os._exit(EXIT_SERVER_LOST)

    threading.Thread(target=watch, name="cfdg-server-watch", daemon=True).start()


def is_connection_error(error: BaseException) -> bool:
    """An error from talking to the Prefect API (the server gone), not from a stage."""
    import httpx

    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        if isinstance(e, httpx.TransportError | ConnectionError):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False
