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
from cfdg.agents.registry import agent_config, agent_keys
from cfdg.config import renamed_keys, to_dict
from cfdg.datasets.build import DatasetConfig
from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
from cfdg.diffusion.variants.registry import get_variant
from cfdg.errors import ConfigError
from cfdg.quality import QualityConfig
from stages import params
from stages.params import ReportParams

# `agent` is the base every agent's own config extends: the section parses into the config of the
# agent `agent.algo` names (`PARSERS`) and accepts every agent's keys (`section_keys`).
CONFIG_CLASSES: dict[str, type] = {
    "dataset": DatasetConfig,
    "agent": AgentConfig,
    "pretrain": PretrainConfig,
    "rollout": RolloutConfig,
    "diffusion": DiffusionConfig,
    "sampling": SamplingConfig,
    "quality": QualityConfig,
    "report": ReportParams,
}


PARSERS: dict[str, Any] = {**CONFIG_CLASSES, "agent": agent_config}


def config_class(name: str) -> type:
    """The dataclass of section `name` (for `agent`, the base of every agent's config)."""
    try:
        return CONFIG_CLASSES[name]
    except KeyError:
        raise ConfigError(f"params: unknown section {name!r}; known: {list(params.SECTIONS)}") from None


def section_keys(name: str) -> set[str]:
    """The keys section `name` accepts (for `agent`, every agent's)."""
    if name == "agent":
        return agent_keys()
    return {f.name for f in dataclasses.fields(config_class(name)) if f.init}


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
    sections = {name: params.section(raw, name, parse, path) for name, parse in PARSERS.items()}
    try:  # the variant's name is the registry's to check: the config sits below it
        get_variant(sections["diffusion"].variant)
    except ConfigError as e:
        raise ConfigError(f"{Path(path).name}:{e}") from None
    return Params(
        seed=params.seed(raw, path),
        source=params.dataset_source(raw, path),
        rounds=params.rounds(raw, path),
        sections=sections,
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
