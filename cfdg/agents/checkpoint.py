"""The agent checkpoint format "cfdg-agent/1" (`atomic_torch_save`, read with weights_only=True).

Keys: algo, env, obs_dim, act_dim, max_action, seed, agent_config (plain dict), agent (module +
optimiser and lr-scheduler state dicts, obs normaliser, phase, grad_steps, offline_steps_total which fixes the
actor's cosine lr), counters (env_steps_total, online_rows, rounds), rng (`resume.capture_rng`),
env_state (`resume.capture_env`; None after pretraining). The online buffers are not saved: they
are rebuilt from the online store, where row i sits at slot i % capacity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cfdg import envs
from cfdg.agents.base import Agent
from cfdg.agents.config import AgentConfig
from cfdg.agents.registry import make_agent
from cfdg.config import from_mapping, to_dict
from cfdg.device import select_device
from cfdg.errors import CheckpointError, ConfigError
from cfdg.io import atomic_torch_save, read_checkpoint

CHECKPOINT_FORMAT = "cfdg-agent/1"

_CHECKPOINT_KEYS = (
    "algo",
    "env",
    "obs_dim",
    "act_dim",
    "max_action",
    "seed",
    "agent_config",
    "agent",
    "counters",
    "rng",
    "env_state",
)


def save_checkpoint(path: Path, agent: Agent, *, env: str, seed: int, counters: dict[str, int], rng, env_state) -> Path:
    obj = {
        "format": CHECKPOINT_FORMAT,
        "algo": agent.algo,
        "env": env,
        "obs_dim": agent.obs_dim,
        "act_dim": agent.act_dim,
        "max_action": agent.max_action,
        "seed": int(seed),
        "agent_config": to_dict(agent.cfg),
        "agent": agent.state_dict(),
        "counters": {k: int(v) for k, v in counters.items()},
        "rng": rng,
        "env_state": env_state,
    }
    return atomic_torch_save(path, obj)


def load_checkpoint(
    path: str | Path, *, env: str | None = None, algo: str | None = None, obs_dim: int | None = None, act_dim=None
) -> dict[str, Any]:
    """Load with weights_only=True and check it belongs to `env` / `algo` / dims when given."""
    path = Path(path)
    ckpt = read_checkpoint(path, "agent")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cfdg agent checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    if env is not None and ckpt["env"] != envs.env_name(env):
        raise CheckpointError(f"{path}: checkpoint is for env '{ckpt['env']}', not '{envs.env_name(env)}'")
    if algo is not None and ckpt["algo"] != algo:
        raise CheckpointError(f"{path}: checkpoint is for algorithm '{ckpt['algo']}', not '{algo}'")
    for name, want in (("obs_dim", obs_dim), ("act_dim", act_dim)):
        if want is not None and ckpt[name] != want:
            raise CheckpointError(f"{path}: checkpoint has {name} {ckpt[name]}, the data has {want}")
    return ckpt


def agent_from_checkpoint(ckpt: dict[str, Any], where: Path) -> Agent:
    try:
        cfg = from_mapping(AgentConfig, ckpt["agent_config"], f"{where}: agent_config")
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    agent = make_agent(cfg, ckpt["obs_dim"], ckpt["act_dim"], ckpt["max_action"], select_device(cfg.device))
    agent.load_state_dict(ckpt["agent"])
    return agent
