"""Build D4RL-style offline datasets on gymnasium MuJoCo v5 envs, seeded and deterministic.

D4RL's recipe (Fu et al. 2020, section 5), with TD3 in place of SAC:
- `random`: uniform random actions;
- `medium`: rollouts of a policy early-stopped at about a third to a half of the expert
  reference return (`medium_target`, a D4RL-normalised score) or at `medium_steps`;
- `medium-replay`: the replay buffer of training that medium policy, in the order collected;
- `expert`: rollouts of the policy trained for `expert_steps`;
- `medium-expert`: `transitions` medium rows followed by `transitions` expert rows.
`terminals` is set where the env terminated, `timeouts` where an episode was truncated (at
`max_episode_steps`, or where collection stopped); `next_observations` are stored, so no row is
dropped. The same config gives a byte-identical store and card.

Default budgets fit the CPU pipeline: Hopper medium-replay (30K env steps of TD3) took 339 s
wall / 210 s CPU on a 2-core machine shared with load ~5 (seed 0: final eval return 220, score
7.4; replay episodes mean return 95, score 3.6). TD3 is far from D4RL's medium level (score ~45)
that early, so the default "medium" is weaker than D4RL's; `medium_target` stops it early when
a bigger budget gets there.
`PAPER_LIKE` holds budgets closer to D4RL's (1M-row datasets, longer training; hours on CPU).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from cfdg.agents.networks import DeterministicPolicy
from cfdg.agents.td3 import TD3Config
from cfdg.config import check, to_dict
from cfdg.datasets.behaviour import train_td3
from cfdg.device import select_device, torch_threads
from cfdg.envs import env_name, gym_id, is_robotics, make_env, normalized_score
from cfdg.errors import ConfigError
from cfdg.io import atomic_write_json
from cfdg.store import StoreMeta, Transitions, write_store

DatasetKind = Literal["random", "medium", "medium-replay", "expert", "medium-expert"]


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """What to build; `params.yaml`'s `dataset` section. Step counts are environment steps."""

    env: str = "hopper"
    kind: DatasetKind = "medium-replay"
    seed: int = 0
    medium_steps: int = 30_000  # most env steps spent training the medium policy
    expert_steps: int = 100_000  # env steps training the expert policy (expert, medium-expert)
    medium_target: float = 40.0  # normalised eval score at which the medium policy is taken
    transitions: int = 100_000  # rows for random / medium / expert (each half of medium-expert)
    max_episode_steps: int = 1000
    start_steps: int = 5000  # uniform random actions before TD3 starts acting and learning
    eval_every: int = 5000
    eval_episodes: int = 5
    rollout_noise: float = 0.1  # Gaussian action noise while collecting medium/expert rollouts
    batch_size: int = 256
    hidden: int = 256
    device: str = "auto"
    # 0 keeps torch's default. 1 by default: with 2 intra-op threads, any other load on a 2-core machine
    # made each TD3 step ~10x slower (142 ms vs 14 ms measured) while waiting for a descheduled thread.
    torch_threads: int = 1

    def __post_init__(self) -> None:
        w = "dataset"
        try:
            gym_id(self.env)
        except ConfigError as e:
            raise ConfigError(f"{w}.env: {e}") from None
        if is_robotics(self.env) and self.kind != "random":
            raise ConfigError(
                f"{w}.kind: {self.kind!r} cannot be built for {env_name(self.env)} (no behaviour policy learns "
                "AntMaze/Adroit on CPU in reasonable time); build 'random' or set dataset.source to a D4RL "
                "file or Minari dataset"
            )
        for name in ("medium_steps", "expert_steps", "transitions", "max_episode_steps", "eval_every"):
            check(getattr(self, name) > 0, f"{w}.{name}", f"must be positive, got {getattr(self, name)}")
        check(self.eval_episodes > 0, f"{w}.eval_episodes", f"must be positive, got {self.eval_episodes}")
        check(self.start_steps >= 0, f"{w}.start_steps", f"must be >= 0, got {self.start_steps}")
        check(self.batch_size > 0 and self.hidden > 0, w, "batch_size and hidden must be positive")
        check(self.torch_threads >= 0, f"{w}.torch_threads", f"must be >= 0, got {self.torch_threads}")
        check(0.0 <= self.rollout_noise <= 1.0, f"{w}.rollout_noise", f"must be in [0, 1], got {self.rollout_noise}")
        check(
            self.expert_steps >= self.medium_steps,
            f"{w}.expert_steps",
            f"must be >= medium_steps ({self.medium_steps}), got {self.expert_steps}",
        )

    def td3(self) -> TD3Config:
        """The behaviour policy's TD3: TD3's defaults (the TD3 paper's, APL0's) at this width and batch,
        on raw states (D4RL's behaviour policies saw them)."""
        return TD3Config(hidden_dims=(self.hidden, self.hidden), batch_size=self.batch_size, normalize_obs=False)


# Closer to D4RL (1M-row datasets; SAC trained 1M steps for expert). Hours on CPU.
PAPER_LIKE: dict[str, Any] = {
    "medium_steps": 300_000,
    "expert_steps": 1_000_000,
    "transitions": 1_000_000,
    "start_steps": 25_000,
    "eval_every": 10_000,
    "eval_episodes": 10,
}


def _collect(
    env: str,
    actor: DeterministicPolicy | None,
    n: int,
    seed: int,
    cfg: DatasetConfig,
    desc: str,
    progress: bool,
) -> tuple[dict[str, np.ndarray], list[float]]:
    """`n` rows of whole episodes (the last one cut) and the returns of the episodes that ended."""
    e = make_env(env)
    e.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    obs_dim, act_dim = e.observation_space.shape[0], e.action_space.shape[0]
    rows = {
        "observations": np.zeros((n, obs_dim), np.float32),
        "actions": np.zeros((n, act_dim), np.float32),
        "rewards": np.zeros(n, np.float32),
        "next_observations": np.zeros((n, obs_dim), np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    returns: list[float] = []
    obs, _ = e.reset(seed=seed)
    ep_ret, ep_len = 0.0, 0
    for i in tqdm(range(n), desc=desc, unit="step", disable=not progress, mininterval=1.0):
        if actor is None:
            action = e.action_space.sample()
        else:
            with torch.no_grad():
                a = actor(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))[0].numpy()
            action = np.clip(a + rng.normal(0.0, cfg.rollout_noise, size=act_dim), -1.0, 1.0).astype(np.float32)
        next_obs, rew, term, trunc, _ = e.step(action)
        ep_ret += float(rew)
        ep_len += 1
        trunc = (bool(trunc) or ep_len >= cfg.max_episode_steps) and not term
        rows["observations"][i], rows["actions"][i], rows["rewards"][i] = obs, action, rew
        rows["next_observations"][i], rows["terminals"][i], rows["timeouts"][i] = next_obs, term, trunc
        obs = next_obs
        if term or trunc:
            returns.append(ep_ret)
            obs, _ = e.reset()
            ep_ret, ep_len = 0.0, 0
    e.close()
    return rows, returns


def _replay_returns(rows: dict[str, np.ndarray]) -> list[float]:
    """Returns of the finished episodes in a replay buffer (the unfinished last one is left out)."""
    ends = np.flatnonzero(rows["terminals"] | rows["timeouts"])
    sums = np.cumsum(rows["rewards"], dtype=np.float64)
    totals = np.diff(np.concatenate([[0.0], sums[ends]]))
    return [float(x) for x in totals]


def _summary(env: str, returns: list[float]) -> dict[str, float | None]:
    if not returns:
        return {k: None for k in ("mean", "min", "max", "normalized_mean", "normalized_min", "normalized_max")}
    r = np.asarray(returns, dtype=np.float64)
    out = {"mean": float(r.mean()), "min": float(r.min()), "max": float(r.max())}
    out.update({f"normalized_{k}": normalized_score(env, v) for k, v in list(out.items())})
    return out


def build_dataset(
    cfg: DatasetConfig, out_store: str | Path, out_card: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train the behaviour policy if the kind needs one, collect, write the store and card; returns the card."""
    with torch_threads(cfg.torch_threads):
        return _build(cfg, out_store, out_card, progress)


def _build(cfg: DatasetConfig, out_store: str | Path, out_card: str | Path | None, progress: bool) -> dict[str, Any]:
    env = env_name(cfg.env)
    device = select_device(cfg.device)
    curve: list[dict[str, float]] = []
    training: dict[str, Any] = {}
    parts: dict[str, dict[str, np.ndarray]] = {}
    returns: dict[str, list[float]] = {}

    if cfg.kind != "random":
        expert = cfg.kind in ("expert", "medium-expert")
        result = train_td3(
            env,
            cfg.expert_steps if expert else cfg.medium_steps,
            cfg.seed,
            device,
            cfg.td3(),
            start_steps=cfg.start_steps,
            medium_target=cfg.medium_target,
            medium_budget=cfg.medium_steps,
            stop_at_medium=not expert,
            eval_every=cfg.eval_every,
            eval_episodes=cfg.eval_episodes,
            max_episode_steps=cfg.max_episode_steps,
            progress=progress,
        )
        curve = result.curve
        medium_eval = next((c for c in curve if c["step"] == result.medium_step), None)
        training = {"medium_policy_step": result.medium_step, "medium_policy_eval": medium_eval}
        if expert:
            training["expert_policy_step"] = cfg.expert_steps
            training["expert_policy_eval"] = curve[-1] if curve else None

    seed_rollouts = cfg.seed + 1  # rollouts never replay the training env's episode seeds
    if cfg.kind == "random":
        parts["random"], returns["random"] = _collect(
            env, None, cfg.transitions, seed_rollouts, cfg, "random", progress
        )
    elif cfg.kind == "medium-replay":
        parts["medium-replay"] = result.replay
        returns["medium-replay"] = _replay_returns(result.replay)
    else:
        if cfg.kind in ("medium", "medium-expert"):
            parts["medium"], returns["medium"] = _collect(
                env, result.medium_actor, cfg.transitions, seed_rollouts, cfg, "medium rollouts", progress
            )
        if cfg.kind in ("expert", "medium-expert"):
            parts["expert"], returns["expert"] = _collect(
                env, result.final_actor, cfg.transitions, seed_rollouts + 1, cfg, "expert rollouts", progress
            )

    for rows in parts.values():  # the last episode was cut: its rows end without a terminal
        rows["timeouts"][-1] |= ~rows["terminals"][-1]
    data = Transitions.concat([Transitions.from_arrays(p, f"{env}-{cfg.kind} {name}") for name, p in parts.items()])
    all_returns = [r for part in returns.values() for r in part]
    about = {  # for the store's dataset card: how the rows were collected and what they score
        "episodes": len(all_returns),
        "returns": _summary(env, all_returns),
        "behaviour": {"algorithm": "TD3" if cfg.kind != "random" else "uniform random", **training},
    }
    meta = StoreMeta(
        kind="offline",
        env_id=env,
        source=f"cfdg-built:{env}-{cfg.kind}",
        seed=cfg.seed,
        params=to_dict(cfg),
        card={"dataset": about},
    )
    write_store(out_store, data, meta)

    card: dict[str, Any] = {
        "env": env,
        "gym_id": gym_id(env),
        "kind": cfg.kind,
        "source": meta.source,
        "size": len(data),
        "obs_dim": data.obs_dim,
        "act_dim": data.act_dim,
        "episodes": len(all_returns),
        "terminals": int(data.terminals.sum()),
        "timeouts": int(data.timeouts.sum()),
        "returns": _summary(env, all_returns),
        "parts": {
            name: {"size": len(p["rewards"]), "returns": _summary(env, returns[name])} for name, p in parts.items()
        },
        "seed": cfg.seed,
        "budget": {"medium_steps": cfg.medium_steps, "expert_steps": cfg.expert_steps, "transitions": cfg.transitions},
        "behaviour": {"algorithm": "TD3", "medium_target": cfg.medium_target, **training},
        "training_curve": curve,
        "config": to_dict(cfg),
    }
    if out_card is not None:
        atomic_write_json(out_card, card)
    return card
