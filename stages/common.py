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
