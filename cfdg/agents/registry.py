"""`make_agent`: the algorithm name → agent class table. Importing it loads every agent.

It lives here, not in `cfdg/agents/__init__.py`, so that code needing one piece (the dataset
stage's TD3 uses `networks` and `optim`) does not load, and depend on, every agent.
"""

from __future__ import annotations

import torch

from cfdg.agents.apl import APL
from cfdg.agents.apl import ENGINES as APL_ENGINES
from cfdg.agents.base import Agent
from cfdg.agents.calql import CalQL
from cfdg.agents.config import AgentConfig
from cfdg.agents.iql import IQL
from cfdg.agents.pex import PEX

# The algorithm name -> its class; APL's is the base its two engines share (`agent_class` picks one).
AGENTS: dict[str, type[Agent]] = {"iql": IQL, "pex": PEX, "apl": APL, "calql": CalQL}


def agent_class(cfg: AgentConfig) -> type[Agent]:
    """`cfg.algo`'s class; APL's is the form `cfg.apl_engine` names."""
    return APL_ENGINES[cfg.apl_engine] if cfg.algo == "apl" else AGENTS[cfg.algo]


def make_agent(cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> Agent:
    """A fresh agent for `cfg.algo`; network init draws from torch's global RNG (seed it first)."""
    return agent_class(cfg)(cfg, obs_dim, act_dim, max_action, device)
