"""What every stage shares: the command-line runner, provenance records, JSON metrics.

The runner turns a stage into `python -m stages.<name> [--round k]`: it honours the testing
hook `CFDG_FAIL_STAGE`, turns a CfdgError into one stderr line and exit code 2, and leaves
no half-written output behind (the library writes atomically).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfdg.config import to_dict
from cfdg.errors import CfdgError
from cfdg.io import atomic_write_json, code_version, digest

# Testing hook: a comma-separated list of stage ids (`fit@2`, `pretrain`) that fail on start,
# as a crash would, so tests and users can rehearse a failed round and its retry.
FAIL_ENV = "CFDG_FAIL_STAGE"
# Progress bars: on when stderr is a terminal, or forced with CFDG_PROGRESS=1 / 0.
PROGRESS_ENV = "CFDG_PROGRESS"


class InjectedFailure(CfdgError):
    """Raised when CFDG_FAIL_STAGE names the running stage."""


def derive_seed(seed: int, round_index: int, salt: str) -> int:
    """A per-(round, stage) seed: distinct streams for every round and stage, same for the same inputs."""
    entropy = [seed, round_index, *salt.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def stage_id(name: str, k: int | None = None) -> str:
    return name if k is None else f"{name}@{k}"


def fail_if_injected(stage: str) -> None:
    wanted = {s.strip() for s in os.environ.get(FAIL_ENV, "").split(",") if s.strip()}
    if stage in wanted:
        raise InjectedFailure(f"{stage}: failing on purpose because {FAIL_ENV}={os.environ[FAIL_ENV]!r}")


def progress_enabled() -> bool:
    value = os.environ.get(PROGRESS_ENV)
    if value is not None:
        return value.strip().lower() not in ("", "0", "false", "no")
    return sys.stderr.isatty()


def plain(value: Any) -> Any:
    """JSON-able data from metrics: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return value.as_posix()
    return value


# Metrics that differ between two runs of the same inputs (wall time, speed, the device used):
# kept out of the tracked metrics files so identical inputs give byte-identical artifacts.
_VOLATILE = ("seconds", "per_s", "device", "time")


def _volatile(key: str) -> bool:
    return any(part in key for part in _VOLATILE)


def split_metrics(raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scalars, rest): scalars (nested dicts of numbers/strings) for the DVC metrics file;
    lists (curves, per-episode returns) and volatile timings go to the stage's log instead."""
    scalars: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if _volatile(key):
            rest[key] = value
        elif isinstance(value, Mapping):
            inner, inner_rest = split_metrics(value)
            if inner:
                scalars[key] = inner
            if inner_rest:
                rest[key] = inner_rest
        elif isinstance(value, list | tuple | np.ndarray):
            rest[key] = value
        else:
            scalars[key] = value
    return plain(scalars), plain(rest)


def write_metrics(path: Path, raw: Mapping[str, Any], log_dir: Path = Path("artifacts/logs")) -> dict[str, Any]:
    """Write the scalar metrics to `path` (a DVC metrics file) and everything to `log_dir/<stage>.json`.

    The log (curves, timings) is not a DVC output: it is for people, and it may differ run to run.
    """
    scalars, _ = split_metrics(raw)
    write_json(path, scalars)
    write_json(log_dir / f"{path.parent.name}-{path.name}", raw)
    return scalars


def score_fields(raw: Mapping[str, Any], env_steps: int) -> dict[str, Any]:
    """The learning-curve point of a pretrain/rollout result: steps, mean and std normalised score."""
    evals = raw.get("eval") or []
    last = evals[-1] if evals else {}
    scores = last.get("normalized_scores") or []
    return {
        "env_steps_total": int(env_steps),
        "normalized_score": float(raw.get("final_normalized_score", last.get("normalized_score", float("nan")))),
        "normalized_score_std": float(np.std(scores)) if len(scores) else 0.0,
    }


def config_dict(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg) if cfg is not None else {}


def provenance(stage: str, inputs: Mapping[str, Path], params: Mapping[str, Any]) -> dict[str, Any]:
    """What produced an output: each input's sha256, the parameters, the code version. No clock time."""
    return {
        "stage": stage,
        "inputs": {name: {"path": Path(p).as_posix(), "sha256": digest(p)} for name, p in sorted(inputs.items())},
        "params": plain(params),
        "code_version": code_version(),
    }


def input_digests(inputs: Mapping[str, Path]) -> dict[str, str]:
    """name -> sha256, the form StoreMeta.inputs takes."""
    return {name: digest(p) for name, p in sorted(inputs.items())}


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_json(path, plain(obj))


def run_main(
    name: str, body: Callable[[argparse.Namespace], Any], argv: list[str] | None = None, rounds: bool = False
) -> int:
    """Parse `--params` (and `--round k`), check the failure hook, run `body(args)`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{name}", description=f"cfdg pipeline stage '{name}'")
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    if rounds:
        parser.add_argument("--round", type=int, required=True, help="round number k >= 1")
    args = parser.parse_args(argv)
    sid = stage_id(name, getattr(args, "round", None))
    try:
        fail_if_injected(sid)
        body(args)
    except CfdgError as e:
        print(f"stage {sid}: error: {e}", file=sys.stderr)
        return 2
    return 0
