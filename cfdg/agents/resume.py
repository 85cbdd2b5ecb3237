"""What a round needs to resume bit for bit, as plain data a weights_only checkpoint can hold.

Every RNG the loop reads (torch, CUDA, NumPy, Python, the loop's sampler and act generators) and
the MuJoCo episode in progress (integration state, TimeLimit counter, the env's np_random,
current observation, running return and length), so a round continues exactly where the
previous one stopped.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch

from cfdg import envs
from cfdg.errors import CheckpointError


@dataclasses.dataclass
class Rngs:
    """Generators owned by the loop: batch sampling and acting. Evaluation gets its own."""

    sampler: torch.Generator
    act: torch.Generator

    @classmethod
    def seeded(cls, seed: int) -> Rngs:
        return cls(torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (third-party code may use the global RNG)
    torch.manual_seed(seed)


def capture_rng(rngs: Rngs) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "python": _plain(random.getstate()),
        "sampler": rngs.sampler.get_state(),
        "act": rngs.act.get_state(),
    }
    return state


def restore_rng(state: dict[str, Any], rngs: Rngs) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    rngs.sampler.set_state(state["sampler"])
    rngs.act.set_state(state["act"])


def _plain(x: Any) -> Any:
    return [_plain(v) for v in x] if isinstance(x, tuple | list) else x


def _time_limit(env: gym.Env) -> gym.wrappers.TimeLimit:
    e = env
    while isinstance(e, gym.Wrapper):
        if isinstance(e, gym.wrappers.TimeLimit):
            return e
        e = e.env
    raise CheckpointError(f"env {env} has no TimeLimit wrapper; cannot checkpoint its episode")


def capture_env(env: gym.Env, obs: np.ndarray, episode_return: float, episode_length: int) -> dict[str, Any]:
    """The episode in progress: full MuJoCo integration state, time limit counter, env RNG."""
    u = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mj = np.empty(mujoco.mj_stateSize(u.model, spec))
    mujoco.mj_getState(u.model, u.data, mj, spec)
    return {
        "mj_state": torch.from_numpy(mj),
        "qpos": torch.from_numpy(u.data.qpos.copy()),
        "qvel": torch.from_numpy(u.data.qvel.copy()),
        "elapsed_steps": int(_time_limit(env)._elapsed_steps),
        "np_random": u.np_random.bit_generator.state,
        "obs": torch.from_numpy(np.asarray(obs, dtype=np.float64).copy()),
        "episode_return": float(episode_return),
        "episode_length": int(episode_length),
        "extra": envs.episode_state(env),
    }


def restore_env(env: gym.Env, state: dict[str, Any]) -> tuple[np.ndarray, float, int]:
    u = env.unwrapped
    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    mj = state["mj_state"].numpy()
    if mj.shape[0] != mujoco.mj_stateSize(u.model, spec):
        raise CheckpointError("checkpoint's MuJoCo state does not fit this env")
    envs.restore_episode_state(env, state.get("extra"))
    mujoco.mj_setState(u.model, u.data, mj, spec)
    mujoco.mj_forward(u.model, u.data)
    _time_limit(env)._elapsed_steps = state["elapsed_steps"]
    u.np_random.bit_generator.state = state["np_random"]
    return state["obs"].numpy().copy(), float(state["episode_return"]), int(state["episode_length"])
