"""Every params.yaml section with the dataclass that validates it, and `load_all` over them.

This table lives in the pipeline layer, above the stages: validating the whole file loads every
component, which a stage must not do (a stage names its own config classes, so its imports, and
dvc.yaml's deps, stay its own). `cfdg check`, the flows and the study use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cfdg.agents.config import AgentConfig, PretrainConfig, RolloutConfig
from cfdg.config import renamed_keys, to_dict
from cfdg.datasets.build import DatasetConfig
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
from cfdg.errors import ConfigError
from stages import params
from stages.params import QualityParams, ReportParams

CONFIG_CLASSES: dict[str, type] = {
    "dataset": DatasetConfig,
    "agent": AgentConfig,
    "pretrain": PretrainConfig,
    "rollout": RolloutConfig,
    "diffusion": DiffusionConfig,
    "sampling": SamplingConfig,
    "quality": QualityParams,
    "report": ReportParams,
}


def config_class(name: str) -> type:
    """The dataclass of section `name`."""
    try:
        return CONFIG_CLASSES[name]
    except KeyError:
        raise ConfigError(f"params: unknown section {name!r}; known: {list(params.SECTIONS)}") from None


def renamed(raw: Mapping[str, Any], place: str, quiet: bool = False) -> dict[str, Any]:
    """A params mapping, preset or study layer with every renamed key under its new name (one
    warning line per old name and place; none when `quiet`): what presets, study files and
    committed study results go through, so a cell's params.yaml only ever holds the new names."""
    out = dict(raw)
    for name, value in raw.items():
        cls = CONFIG_CLASSES.get(name)
        if cls is not None and isinstance(value, Mapping):
            out[name] = renamed_keys(cls, value, place, name, quiet)
    return out


@dataclasses.dataclass(frozen=True)
class Params:
    """Every section validated; what `cfdg check` prints."""

    seed: int
    source: str
    rounds: dict[int, int]
    sections: dict[str, Any]


def validate(raw: dict[str, Any], path: str | Path = params.PARAMS_FILE) -> Params:
    """Every section of an already-read params mapping, typed; the first bad key raises ConfigError."""
    return Params(
        seed=params.seed(raw, path),
        source=params.dataset_source(raw, path),
        rounds=params.rounds(raw, path),
        sections={name: params.section(raw, name, cls, path) for name, cls in CONFIG_CLASSES.items()},
    )


def load_all(path: str | Path = params.PARAMS_FILE) -> Params:
    return validate(params.read_params(path), path)


def resolved(p: Params) -> dict[str, Any]:
    """Every effective setting, defaults included, as flat `section.key -> value` (`cfdg check --resolved`)."""
    flat: dict[str, Any] = {"seed": p.seed}
    for name, cfg in p.sections.items():
        for key, value in to_dict(cfg).items():
            flat[f"{name}.{key}"] = value
    flat["rounds"] = len(p.rounds)
    return flat
