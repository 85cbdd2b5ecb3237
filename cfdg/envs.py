"""Environments and D4RL score normalisation.

D4RL names (`hopper-medium-replay-v2`) map to a short env name (`hopper`), which maps to a
gymnasium env for rollouts and to D4RL's reference returns for scoring.

Locomotion uses gymnasium MuJoCo v5. AntMaze and Adroit use gymnasium-robotics (the optional
extra `cfdg[robotics]`), wrapped so that the online env yields rows laid out exactly as the
dataset it is fine-tuned from:

- `antmaze-{umaze,medium,large}`: D4RL's layout (a D4RL HDF5 file). Observation 29 =
  ant qpos[:15] ⊕ qvel[:14] with x, y in D4RL's frame (origin at the start cell). D4RL's maze
  builder puts row i of the map at y = i·4 while gymnasium-robotics puts it at −i·4, so the
  maze is built from D4RL's map with its rows reversed: then the two frames differ by a
  translation only, which the wrapper removes. Start: D4RL's start cell, uniform ±0.1 noise on
  qpos and N(0, 0.1) on qvel (D4RL's ant reset). Goal: D4RL's evaluation goal cell plus
  U[0, 1]² (D4RL's `set_target` noise). Reward 1 and termination within 0.5 of the goal (D4RL
  eval envs), so an episode return is 0 or 1 and the normalised score is the success rate × 100.
- `antmaze-{umaze,medium,large}-minari`: Minari's `D4RL/antmaze/*-v1` layout, i.e.
  gymnasium-robotics' own maze frame and noise; observation 29 = achieved_goal ⊕ observation
  (x, y first, as D4RL), goal not in the observation, termination at the goal (0.45, the radius
  those datasets were recorded with).
- `pen`, `door`, `hammer`, `relocate`: gymnasium-robotics `AdroitHand*-v1` (same observations as
  D4RL's v1 datasets and Minari's `D4RL/<task>/*-v2`: 45, 39, 46, 39 wide), D4RL's horizons
  (pen 100, others 200) and D4RL's reward: gymnasium-robotics 1.2.1–1.4.x flipped the sign of
  the hand-to-object term of door/hammer/relocate (Gymnasium-Robotics PR #220); the wrapper
  restores D4RL's −0.1·‖palm − object‖ so returns are comparable with D4RL's reference returns.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from cfdg.errors import ConfigError, DatasetError

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

# gymnasium-robotics ids and D4RL's horizons (max_episode_steps).
ADROIT_IDS: dict[str, str] = {
    "pen": "AdroitHandPen-v1",
    "door": "AdroitHandDoor-v1",
    "hammer": "AdroitHandHammer-v1",
    "relocate": "AdroitHandRelocate-v1",
}
MAZES: dict[str, str] = {"umaze": "AntMaze_UMaze-v4", "medium": "AntMaze_Medium-v4", "large": "AntMaze_Large-v4"}
HORIZONS: dict[str, int] = {
    "antmaze-umaze": 700,
    "antmaze-medium": 1000,
    "antmaze-large": 1000,
    "pen": 100,
    "door": 200,
    "hammer": 200,
    "relocate": 200,
}
# D4RL's evaluation maps (maze_env U_MAZE_TEST, BIG_MAZE_TEST, HARDEST_MAZE_TEST): start and goal cells.
MAZE_CELLS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "umaze": ((1, 1), (3, 1)),
    "medium": ((1, 1), (6, 6)),
    "large": ((1, 1), (7, 9)),
}
# Observation widths of D4RL's datasets (and of the online envs here).
OBS_DIMS: dict[str, int] = {"antmaze": 29, "pen": 45, "door": 39, "hammer": 46, "relocate": 39}

# D4RL dataset names this project knows; every one maps to an env below.
D4RL_ANTMAZE = tuple(
    f"antmaze-{m}-v2"
    for m in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")
)
D4RL_ADROIT = tuple(f"{t}-{k}-v1" for t in ADROIT_IDS for k in ("human", "cloned", "expert"))

_ALIASES = {"half_cheetah": "halfcheetah", "cheetah": "halfcheetah", "walker": "walker2d"}
_GR_MAZE = {"umaze": "umaze", "medium": "medium", "large": "large", "bigmaze": "medium", "hardestmaze": "large"}


def family(env: str) -> str:
    """The task family of an env name: `antmaze-large` -> `antmaze`, `hopper` -> `hopper`."""
    return env_name(env).split("-")[0]


def env_name(name: str) -> str:
    """Env name from a short name, a gymnasium(-robotics) id, a D4RL dataset name or a Minari dataset id.

    AntMaze names keep the maze (`antmaze-large`; `-minari` for Minari's layout), because the
    maze decides the env; every other family is one env (`hopper`, `pen`).
    """
    key = name.strip().lower()
    for gym_name, gym_id_ in {**GYM_IDS, **ADROIT_IDS}.items():
        if key == gym_id_.lower() or key.startswith(gym_id_.lower().split("-")[0] + "-"):
            return gym_name
    m = re.fullmatch(r"antmaze_(\w+?)(?:_diverse_gr?)?-v\d+", key)  # a gymnasium-robotics id
    if m and m.group(1) in _GR_MAZE:
        return f"antmaze-{_GR_MAZE[m.group(1)]}-minari"
    if "/" in key:  # a Minari id: namespace/.../name-vN, e.g. D4RL/antmaze/umaze-v1, mujoco/hopper/medium-v0
        parts = key.split("/")
        if len(parts) >= 3 and parts[-2] == "antmaze":
            maze = parts[-1].split("-")[0]
            if maze in MAZE_CELLS:
                return f"antmaze-{maze}-minari"
            raise ConfigError(f"unknown AntMaze maze in {name!r}; known: {sorted(MAZE_CELLS)}")
        key = parts[-2] if len(parts) >= 2 else parts[-1]
    head = key.split("-")[0]
    if head == "antmaze":
        rest = key.split("-")[1:]
        if not rest or rest[0] not in MAZE_CELLS:
            raise ConfigError(
                f"env {name!r} needs a maze: antmaze-umaze, antmaze-medium or antmaze-large "
                "(rolled out with gymnasium-robotics)"
            )
        return f"antmaze-{rest[0]}" + ("-minari" if "minari" in rest else "")
    head = _ALIASES.get(head, head)
    if head not in REF_SCORES:
        raise ConfigError(f"unknown env {name!r}; known: {sorted(REF_SCORES)}")
    return head


def normalized_score(env: str, episode_return: float) -> float:
    """D4RL normalised score: 100 · (return − REF_MIN) / (REF_MAX − REF_MIN)."""
    head = env.strip().lower().split("-")[0]
    head = _ALIASES.get(head, head)
    lo, hi = REF_SCORES[head if head in REF_SCORES else family(env)]
    return 100.0 * (episode_return - lo) / (hi - lo)


def gym_id(env: str) -> str:
    """The gymnasium id an env is made from (its wrappers set D4RL's layout on top)."""
    try:
        name = env_name(env)
    except ConfigError as e:
        raise ConfigError(f"{e} (AntMaze/Adroit need gymnasium-robotics)") from e
    if name in GYM_IDS:
        return GYM_IDS[name]
    if name in ADROIT_IDS:
        return ADROIT_IDS[name]
    if name.startswith("antmaze-"):
        return MAZES[name.split("-")[1]]
    raise ConfigError(
        f"env {env!r} has no gymnasium id (AntMaze/Adroit need gymnasium-robotics); "
        f"rollouts support {sorted([*GYM_IDS, *ADROIT_IDS])} and antmaze-umaze|medium|large"
    )


def is_robotics(env: str) -> bool:
    return family(env) in ("antmaze", *ADROIT_IDS)


def _robotics() -> None:
    try:
        import gymnasium_robotics
    except ImportError as e:
        raise ConfigError(f"AntMaze and Adroit need gymnasium-robotics: install cfdg[robotics] ({e})") from e
    gym.register_envs(gymnasium_robotics)


def make_env(env: str, seed: int | None = None) -> gym.Env:
    """A gymnasium env for `env`, reset with `seed` once so its RNG is defined."""
    name = env_name(env)
    if name in GYM_IDS:
        e = gym.make(GYM_IDS[name])
    elif name in ADROIT_IDS:
        _robotics()
        e = D4RLAdroit(gym.make(ADROIT_IDS[name], max_episode_steps=HORIZONS[name]), name)
    else:
        _robotics()
        e = _antmaze(name)
    if seed is not None:
        e.reset(seed=seed)
        e.action_space.seed(seed)
    return e


# --- AntMaze ----------------------------------------------------------------------------------


def maze_map(maze: str, layout: str = "d4rl") -> list[list[Any]]:
    """D4RL's evaluation map of `maze` with its start 'r' and goal 'g' cells.

    layout 'd4rl': rows reversed, so gymnasium-robotics' y axis runs like D4RL's (see module doc).
    """
    from gymnasium_robotics.envs.maze import maps

    walls = {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}[maze]
    grid: list[list[Any]] = [[1 if c == 1 else 0 for c in row] for row in walls]
    (ri, rj), (gi, gj) = MAZE_CELLS[maze]
    grid[ri][rj], grid[gi][gj] = "r", "g"
    return grid[::-1] if layout == "d4rl" else grid


def _antmaze(name: str) -> gym.Env:
    maze, minari = name.split("-")[1], name.endswith("-minari")
    inner = gym.make(
        MAZES[maze],
        maze_map=maze_map(maze, "minari" if minari else "d4rl"),
        continuing_task=False,
        reset_target=False,
        max_episode_steps=HORIZONS[f"antmaze-{maze}"],
    )
    return FlatAntMaze(inner) if minari else D4RLAntMaze(inner, maze)


class FlatAntMaze(gym.Wrapper):
    """Minari's AntMaze rows as one vector: achieved_goal (x, y) ⊕ observation (27)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIMS["antmaze"],), np.float64)

    def flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([obs["achieved_goal"], obs["observation"]])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        return self.flat(obs), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, r, term, trunc, info = self.env.step(action)
        return self.flat(obs), float(r), bool(term), bool(trunc), info


class D4RLAntMaze(FlatAntMaze):
    """D4RL's AntMaze evaluation env on gymnasium-robotics' maze (see the module docstring)."""

    GOAL_RADIUS = 0.5  # D4RL: reward 1 and done within 0.5 m of the goal
    GOAL_NOISE = 1.0  # D4RL set_target: cell + U[0, 0.5] · 0.5 · maze_size_scaling per axis
    RESET_NOISE = 0.1  # D4RL ant reset_model: qpos + U(±0.1), qvel + 0.1·N(0, 1)

    def __init__(self, env: gym.Env, maze: str) -> None:
        super().__init__(env)
        u = env.unwrapped
        u.position_noise_range = 0.0  # start and goal at cell centres; D4RL's noise is added here
        u.ant_env._reset_noise_scale = self.RESET_NOISE
        rows = len(maze_map(maze))
        (ri, rj), _ = MAZE_CELLS[maze]
        self.origin = np.asarray(u.maze.cell_rowcol_to_xy(np.array([rows - 1 - ri, rj])), dtype=np.float64)

    def flat(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([obs["achieved_goal"] - self.origin, obs["observation"]])

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        obs, info = self.env.reset(**kwargs)
        u = self.env.unwrapped
        u.goal = u.goal + u.np_random.uniform(0.0, self.GOAL_NOISE, size=2)
        u.update_target_site_pos()
        return self.flat(obs), info

    @property
    def goal(self) -> np.ndarray:
        """The goal in D4RL's frame."""
        return self.env.unwrapped.goal - self.origin

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, _, _, trunc, info = self.env.step(action)
        reached = bool(np.linalg.norm(obs["achieved_goal"] - self.env.unwrapped.goal) <= self.GOAL_RADIUS)
        info["success"] = reached
        return self.flat(obs), float(reached), reached, bool(trunc) and not reached, info


# --- Adroit -----------------------------------------------------------------------------------


class D4RLAdroit(gym.Wrapper):
    """D4RL's Adroit reward: −0.1·‖palm − object‖ where gymnasium-robotics v1 has +0.1·‖…‖."""

    def __init__(self, env: gym.Env, task: str) -> None:
        super().__init__(env)
        self.task = task

    def _hand_to_object(self) -> float:
        u = self.env.unwrapped
        d = u.data
        if self.task == "door":
            return float(np.linalg.norm(d.site_xpos[u.grasp_site_id] - d.site_xpos[u.handle_site_id]))
        return float(np.linalg.norm(d.site_xpos[u.S_grasp_site_id] - d.xpos[u.obj_body_id]))

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        obs, r, term, trunc, info = self.env.step(action)
        if self.task != "pen":
            r = float(r) - 0.2 * self._hand_to_object()
        return obs, float(r), bool(term), bool(trunc), info


# --- episode state beyond MuJoCo's integration state (for resumable rounds) --------------------


def episode_state(env: gym.Env) -> dict[str, Any]:
    """What an episode keeps outside MuJoCo's data: the model fields resets randomise (Adroit's
    door/nail/object/target placement), the maze goal and the ant's own RNG. Plain tensors/ints."""
    u = env.unwrapped
    model = u.model
    state: dict[str, Any] = {
        name: torch.from_numpy(np.array(getattr(model, name))) for name in ("body_pos", "body_quat", "site_pos")
    }
    if hasattr(u, "goal"):
        state["goal"] = torch.from_numpy(np.array(u.goal, dtype=np.float64))
    if hasattr(u, "ant_env"):
        state["ant_np_random"] = u.ant_env.np_random.bit_generator.state
    return state


def restore_episode_state(env: gym.Env, state: dict[str, Any] | None) -> None:
    """Inverse of `episode_state`; call before `mj_forward` so positions follow the model."""
    if not state:
        return
    u = env.unwrapped
    for name in ("body_pos", "body_quat", "site_pos"):
        getattr(u.model, name)[:] = state[name].numpy()
    if "goal" in state:
        u.goal = state["goal"].numpy().copy()
    if "ant_np_random" in state:
        u.ant_env.np_random.bit_generator.state = state["ant_np_random"]


# --- dataset layout against the online env ------------------------------------------------------

ACT_DIMS: dict[str, int] = {"antmaze": 8, "pen": 24, "door": 28, "hammer": 26, "relocate": 30}


# Locomotion row widths of gymnasium MuJoCo v5 (obs, action); Ant's obs is 105 wide with contact
# forces (v5's default) or 27 without, and D4RL's ant (111) is refused: the online env cannot yield it.
LOCOMOTION_DIMS: dict[str, tuple[tuple[int, ...], int]] = {
    "hopper": ((11,), 3),
    "halfcheetah": ((17,), 6),
    "walker2d": ((17,), 6),
    "ant": ((105, 27), 8),
}


def check_layout(env: str, obs_dim: int, act_dim: int, where: object) -> None:
    """A dataset must be laid out as the online env of its env name; one line naming both when not."""
    fam = family(env)
    if fam in LOCOMOTION_DIMS:
        obs_ok, act_ok = LOCOMOTION_DIMS[fam]
        if obs_dim not in obs_ok or act_dim != act_ok:
            wide = " or ".join(str(o) for o in obs_ok)
            raise DatasetError(
                f"{where}: rows are {obs_dim} (obs) / {act_dim} (action) wide but env '{env_name(env)}' "
                f"({GYM_IDS[fam]}) yields {wide} / {act_ok}; the dataset is not a {fam} dataset"
            )
        return
    if fam not in OBS_DIMS:
        return
    want = (OBS_DIMS[fam], ACT_DIMS[fam])
    if (obs_dim, act_dim) != want:
        layout = "Minari's layout" if env_name(env).endswith("-minari") else "D4RL's layout"
        raise DatasetError(
            f"{where}: rows are {obs_dim} (obs) / {act_dim} (action) wide but env '{env_name(env)}' "
            f"({layout}) yields {want[0]} / {want[1]}; the dataset is not a {fam} dataset in that layout"
        )
