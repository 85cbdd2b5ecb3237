"""Environments and D4RL score normalisation.

D4RL names (`hopper-medium-replay-v2`) map to a short env name (`hopper`), which maps to
a gymnasium MuJoCo v5 id for rollouts and to D4RL's reference returns for scoring.
"""

from __future__ import annotations

import gymnasium as gym

from cfdg.errors import ConfigError

# D4RL infos.py reference returns (v2 locomotion, v1 Adroit): (REF_MIN, REF_MAX).
REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "relocate": (-6.425911, 4233.877797728884),
    "hammer": (-274.856578, 12794.134825156867),
}

# gymnasium ids for the envs the project can roll out without optional extras.
GYM_IDS: dict[str, str] = {
    "hopper": "Hopper-v5",
    "halfcheetah": "HalfCheetah-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}

_ALIASES = {"half_cheetah": "halfcheetah", "cheetah": "halfcheetah", "walker": "walker2d"}


def env_name(name: str) -> str:
    """Short env name from a short name, a gymnasium id or a D4RL dataset name."""
    key = name.strip().lower()
    for gym_name, gym_id in GYM_IDS.items():
        if key == gym_id.lower():
            return gym_name
    key = key.split("-")[0]
    key = _ALIASES.get(key, key)
    if key not in REF_SCORES:
        raise ConfigError(f"unknown env {name!r}; known: {sorted(REF_SCORES)}")
    return key


def normalized_score(env: str, episode_return: float) -> float:
    """D4RL normalised score: 100 · (return − REF_MIN) / (REF_MAX − REF_MIN)."""
    lo, hi = REF_SCORES[env_name(env)]
    return 100.0 * (episode_return - lo) / (hi - lo)


def gym_id(env: str) -> str:
    name = env_name(env)
    if name not in GYM_IDS:
        raise ConfigError(
            f"env {env!r} has no built-in gymnasium id (AntMaze/Adroit need gymnasium-robotics); "
            f"rollouts support {sorted(GYM_IDS)}"
        )
    return GYM_IDS[name]


def make_env(env: str, seed: int | None = None) -> gym.Env:
    """A gymnasium env for `env`, reset with `seed` once so its RNG is defined."""
    e = gym.make(gym_id(env))
    if seed is not None:
        e.reset(seed=seed)
        e.action_space.seed(seed)
    return e
