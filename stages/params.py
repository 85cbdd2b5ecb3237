"""params.yaml: read it once, validate each section into the dataclass its component owns.

Each stage reads only the sections that dvc.yaml declares for it, so DVC's record of which
parameters a stage used is the truth. `pipeline.sections.load_all` validates every section at
once (the flow does this before running anything), so a typo fails in a second, not after an
hour of pretraining. Every error names the file and the key, e.g. `params.yaml:diffusion.width`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cfdg.config import check, from_mapping
from cfdg.errors import ConfigError

PARAMS_FILE = Path("params.yaml")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ReportParams:
    """The report's pictures; the numbers come from the rounds' metrics."""

    tsne_max_per_group: int = 1000
    title: str = ""

    def __post_init__(self) -> None:
        check(self.tsne_max_per_group >= 10, "report.tsne_max_per_group", "must be >= 10")


# The sections, in params.yaml order; pipeline/sections.py says which dataclass validates each.
SECTIONS = ("dataset", "agent", "pretrain", "rollout", "diffusion", "sampling", "quality", "report")
TOP_LEVEL = ("seed", "rounds", *SECTIONS)
DATASET_SOURCE_KEY = "source"  # pipeline-level key inside `dataset:`; the rest is DatasetConfig


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The raw mapping, with unknown top-level keys rejected by name."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: parameters file not found (run from the project root)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}{at}: not valid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(TOP_LEVEL))
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key(s) {unknown}; known: {list(TOP_LEVEL)}")
    return dict(data)


def _where(path: str | Path, key: str) -> str:
    return f"{Path(path).name}:{key}"


def section(
    params: Mapping[str, Any],
    name: str,
    config: type[T] | Callable[[Mapping[str, Any], str], T],
    path: str | Path = PARAMS_FILE,
) -> T:
    """Section `name` as its typed `config`; missing keys keep the dataclass defaults.

    `config` is the section's dataclass, or a parser `(mapping, where) -> config` where the class
    depends on the section (`agent:` → the config of the agent `algo` names: `registry.agent_config`).
    The stage names it itself, so its imports say which components it loads (and dvc.yaml's deps
    can list exactly those)."""
    raw = params.get(name) or {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{_where(path, name)}: must be a mapping, got {raw!r}")
    if name == "dataset":
        raw = {k: v for k, v in raw.items() if k != DATASET_SOURCE_KEY}
    try:
        if isinstance(config, type):
            return from_mapping(config, raw, _where(path, name))
        return config(raw, _where(path, name))
    except ConfigError as e:  # range checks in __post_init__ name `section.key` without the file
        prefix = f"{Path(path).name}:"
        raise ConfigError(str(e) if str(e).startswith(prefix) else f"{prefix}{e}") from None


def seed(params: Mapping[str, Any], path: str | Path = PARAMS_FILE) -> int:
    value = params.get("seed", 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{_where(path, 'seed')}: must be a non-negative integer, got {value!r}")
    return value


def dataset_source(params: Mapping[str, Any], path: str | Path = PARAMS_FILE) -> str:
    """`build` (make the dataset with gymnasium) or a D4RL name / HDF5 path / Minari id to import."""
    raw = params.get("dataset") or {}
    value = raw.get(DATASET_SOURCE_KEY, "build") if isinstance(raw, Mapping) else "build"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{_where(path, 'dataset.source')}: must be 'build', a D4RL dataset name, an HDF5 path "
            f"or a Minari id, got {value!r}"
        )
    return value.strip()


def rounds(params: Mapping[str, Any], path: str | Path = PARAMS_FILE) -> dict[int, int]:
    """The rounds table {k: prev}; DVC templating has no arithmetic, so prev is spelled out and checked."""
    where = _where(path, "rounds")
    raw = params.get("rounds")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: must be a non-empty mapping like {{'1': {{prev: 0}}, '2': {{prev: 1}}}}")
    table: dict[int, int] = {}
    for key, item in raw.items():
        try:
            k = int(key)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: key {key!r} is not a round number") from None
        if isinstance(key, bool) or str(k) != str(key) or k < 1:  # "01" would name stage rollout@01, dir rounds/01
            raise ConfigError(f"{where}: key {key!r} must be a round number written plainly, like '{abs(k) or 1}'")
        if not isinstance(item, Mapping) or set(item) != {"prev"}:
            raise ConfigError(f"{where}.{key}: must be {{prev: {k - 1}}}, got {item!r}")
        prev = item["prev"]
        if isinstance(prev, bool) or not isinstance(prev, int) or prev != k - 1:
            raise ConfigError(f"{where}.{key}.prev: must be {k - 1} (the previous round), got {item['prev']!r}")
        table[k] = k - 1
    expected = list(range(1, len(table) + 1))
    if sorted(table) != expected:
        raise ConfigError(f"{where}: rounds must be numbered 1..{len(table)} without gaps, got {sorted(table)}")
    return dict(sorted(table.items()))


def rounds_table(n: int) -> dict[str, dict[str, int]]:
    """The params.yaml form of `n` rounds (string keys: they become DVC stage names like fit@2)."""
    if n < 1:
        raise ConfigError(f"rounds: need at least 1 round, got {n}")
    return {str(k): {"prev": k - 1} for k in range(1, n + 1)}
