"""The algorithm names: `agent.algo` → agent class, whose `config_class` is its config. The only list
of names; importing it loads every agent.

It lives here, not in `cfdg/agents/__init__.py`, so that code needing one piece (the dataset
stage's TD3) does not load, and depend on, every agent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cfdg import envs
from cfdg.agents.apl import APL
from cfdg.agents.base import Agent
from cfdg.agents.calql import CalQL
from cfdg.agents.config import AgentConfig
from cfdg.agents.iql import IQL
from cfdg.agents.pex import PEX
from cfdg.config import from_mapping
from cfdg.device import select_device
from cfdg.errors import CheckpointError, ConfigError

# The algorithm name -> its class; APL's is the base its two engines share (`APL.form` picks one).
AGENTS: dict[str, type[Agent]] = {"iql": IQL, "pex": PEX, "apl": APL, "calql": CalQL}
DEFAULT_ALGO = "iql"  # what an `agent:` section without `algo` runs


def _keys(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def agent_keys() -> set[str]:
    """Every key an `agent:` section accepts: the union of the agents' configs."""
    return set().union(*(_keys(cls.config_class) for cls in AGENTS.values()))


def algos_reading(key: str) -> list[str]:
    """The algorithms whose config holds `key`."""
    return [name for name, cls in AGENTS.items() if key in _keys(cls.config_class)]


def agent_config(mapping: Mapping[str, Any] | None, where: str = "agent") -> AgentConfig:
    """An `agent:` section as the config of the agent its `algo` names.

    A key only another agent reads is accepted, checked by that agent's config, and left out: as
    when one config held every agent's keys, it has no effect. So presets that stack (AntMaze's IQL
    keys under Cal-QL's), a study whose cells change `algo`, and checkpoints written with every
    agent's keys all load as before. A key no agent reads is refused by name.
    """
    mapping = {} if mapping is None else mapping
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {mapping!r}")
    algo = mapping.get("algo", DEFAULT_ALGO)
    if algo not in AGENTS:
        raise ConfigError(f"{where}.algo: must be one of {list(AGENTS)}, got {algo!r}")
    own = _keys(AGENTS[algo].config_class)
    foreign = {k: v for k, v in mapping.items() if k not in own}
    for cls in AGENTS.values():
        theirs = {k: v for k, v in foreign.items() if k in _keys(cls.config_class)}
        if theirs:
            from_mapping(cls.config_class, theirs, where)  # a bad value is refused whichever agent reads it
            foreign = {k: v for k, v in foreign.items() if k not in theirs}
    if foreign:
        raise ConfigError(f"{where}: unknown key(s) {sorted(foreign)}; known: {sorted(agent_keys())}")
    return from_mapping(AGENTS[algo].config_class, {k: v for k, v in mapping.items() if k in own}, where)


def check_env(algo: str, env: str) -> None:
    """Refuse an agent on an env it does not run on (APL: locomotion only), naming those that do."""
    if not AGENTS[algo].supports(env):
        able = [name for name, cls in AGENTS.items() if cls.supports(env)]
        raise ConfigError(
            f"agent.algo: {algo} runs on {AGENTS[algo].runs_on}; env '{envs.env_name(env)}' needs "
            f"{', '.join(able[:-1])} or {able[-1]}"
        )


def make_agent(cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> Agent:
    """A fresh agent for `cfg.algo` (its form, for APL); network init draws from torch's global RNG (seed it first)."""
    return AGENTS[cfg.algo].form(cfg)(cfg, obs_dim, act_dim, max_action, device)


def agent_from_checkpoint(ckpt: dict[str, Any], where: Path) -> Agent:
    """The agent a loaded checkpoint (`checkpoint.load_checkpoint`) holds, weights and state restored."""
    try:
        cfg = agent_config(ckpt["agent_config"], f"{where}: agent_config")
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    if cfg.algo != ckpt["algo"]:  # load_checkpoint refuses this; the agent built must be the one named
        raise CheckpointError(f"{where}: inconsistent agent checkpoint: algo {ckpt['algo']!r}, config {cfg.algo!r}")
    agent = make_agent(cfg, ckpt["obs_dim"], ckpt["act_dim"], ckpt["max_action"], select_device(cfg.device))
    try:
        agent.load_state_dict(ckpt["agent"])
    except CheckpointError as e:
        raise CheckpointError(f"{where}: {e}") from e
    return agent
