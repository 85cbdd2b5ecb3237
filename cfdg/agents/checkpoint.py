"""The agent checkpoint format "cfdg-agent/1" (`atomic_torch_save`, read with weights_only=True).

Keys: algo, env, obs_dim, act_dim, max_action, seed, agent_config (plain dict), agent (module +
optimiser and lr-scheduler state dicts, obs normaliser, phase, grad_steps, offline_steps_total which
fixes the actor's cosine lr; for APL its engine, td3bc or cql, absent before engines existed =
td3bc), counters (env_steps_total, online_rows, rounds), rng (`resume.capture_rng`), env_state
(`resume.capture_env`; None after pretraining). The online buffers are not saved: they are rebuilt
from the online store, where row i sits at slot i % capacity. `agent_config` holds the keys of the
agent's own config (checkpoints from before the configs were split hold every agent's keys; both
load). This module sits below the registry: `registry.agent_from_checkpoint` builds the agent.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from cfdg import envs
from cfdg.agents.base import Agent
from cfdg.config import to_dict
from cfdg.errors import CfdgError, CheckpointError
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
    path: str | Path,
    *,
    env: str | None = None,
    algo: str | None = None,
    obs_dim: int | None = None,
    act_dim: int | None = None,
    apl_engine: str | None = None,
) -> dict[str, Any]:
    """Load with weights_only=True and check it belongs to `env` / `algo` / dims / APL engine when given.

    First the checkpoint must agree with itself (`check_consistent`): a field held twice that
    disagrees would otherwise pass the check below on one copy and run on the other.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, "agent")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a cfdg agent checkpoint (format {CHECKPOINT_FORMAT!r} expected)")
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    check_consistent(path, ckpt)
    if env is not None and ckpt["env"] != envs.env_name(env):
        raise CheckpointError(f"{path}: checkpoint is for env '{ckpt['env']}', not '{envs.env_name(env)}'")
    if algo is not None and ckpt["algo"] != algo:
        raise CheckpointError(f"{path}: checkpoint is for algorithm '{ckpt['algo']}', not '{algo}'")
    if apl_engine is not None and ckpt["algo"] == "apl" and checkpoint_engine(ckpt) != apl_engine:
        raise CheckpointError(f"{path}: checkpoint is APL on the {checkpoint_engine(ckpt)} engine, not {apl_engine}")
    for name, want in (("obs_dim", obs_dim), ("act_dim", act_dim)):
        if want is not None and ckpt[name] != want:
            raise CheckpointError(f"{path}: checkpoint has {name} {ckpt[name]}, the data has {want}")
    return ckpt


def checkpoint_engine(ckpt: dict[str, Any]) -> str | None:
    """The agent form a checkpoint holds (APL: td3bc | cql; checkpoints before engines: td3bc)."""
    if ckpt["algo"] != "apl":
        return None
    return ckpt["agent"].get("engine", "td3bc")


def check_consistent(path: Path, ckpt: dict[str, Any]) -> None:
    """Every fact the checkpoint holds twice agrees: algo (top level and agent_config), env (its name
    and the row widths it yields), dims (top level and the obs normaliser), and the types they need."""

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: inconsistent agent checkpoint: {what}")

    for key in ("obs_dim", "act_dim"):
        if not isinstance(ckpt[key], int) or isinstance(ckpt[key], bool) or ckpt[key] < 1:
            raise bad(f"{key} is {ckpt[key]!r}, expected a positive integer")
    max_action = ckpt["max_action"]
    if not isinstance(max_action, int | float) or not math.isfinite(max_action) or max_action <= 0:
        raise bad(f"max_action is {max_action!r}, expected a positive number")
    config, state = ckpt["agent_config"], ckpt["agent"]
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise bad(f"agent_config is a {type(config).__name__} and agent a {type(state).__name__}, expected dicts")
    config_algo = config.get("algo")
    if ckpt["algo"] != config_algo:
        raise bad(f"algo is {ckpt['algo']!r} but agent_config.algo is {config_algo!r}")
    if ckpt["algo"] == "apl":
        config_engine = config.get("apl_engine", "td3bc")  # APLConfig's default
        if checkpoint_engine(ckpt) != config_engine:
            raise bad(f"agent.engine is {checkpoint_engine(ckpt)!r} but agent_config.apl_engine is {config_engine!r}")
    if not isinstance(ckpt["env"], str):
        raise bad(f"env is {ckpt['env']!r}, expected an env name")
    try:
        canonical = envs.env_name(ckpt["env"])
        envs.check_layout(canonical, ckpt["obs_dim"], ckpt["act_dim"], "its obs_dim/act_dim")
    except CfdgError as e:
        raise bad(f"env {ckpt['env']!r}: {e}") from None
    if canonical != ckpt["env"]:
        raise bad(f"env {ckpt['env']!r} is not an env name as cfdg writes it ({canonical!r})")
    for key in ("obs_mean", "obs_std"):
        value = state.get(key)
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if shape != [ckpt["obs_dim"]]:
            raise bad(f"agent.{key} is {shape}, obs_dim says {ckpt['obs_dim']}")
    if state.get("phase") not in ("offline", "online"):
        raise bad(f"agent.phase is {state.get('phase')!r}, expected 'offline' or 'online'")
