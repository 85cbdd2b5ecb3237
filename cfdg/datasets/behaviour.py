"""The behaviour-policy run for building D4RL-style datasets without downloads: a collection loop.

D4RL's behaviour policies were SAC agents; TD3 (Fujimoto et al. 2018) is used here because
its deterministic actor makes datasets reproducible bit for bit and its update is cheaper. The
agent is the project's one TD3 (`cfdg/agents/td3.py`, the update APL's `td3bc` engine extends),
trained from the project's replay buffer (`cfdg/agents/replay.py`) and scored by its `evaluate`;
this module is only the loop: act, step the env, log the row, update, evaluate, keep the policies.
The rows are logged in insertion order with their timeouts (`TransitionLog`: the medium-replay
dataset is its prefix). Batches are drawn with a CPU generator, as the agents' are, so a dataset
built on a GPU matches one built on the CPU batch for batch.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import torch
from tqdm.auto import tqdm

from cfdg.agents.evaluate import evaluate
from cfdg.agents.networks import DeterministicPolicy
from cfdg.agents.replay import ReplayBuffer, TransitionLog, sample_uniform
from cfdg.agents.td3 import TD3, TD3Config
from cfdg.envs import make_env, normalized_score


@dataclasses.dataclass
class TrainResult:
    """What a training run leaves: the replay buffer up to the medium snapshot, both policies, the curve."""

    replay: dict[str, np.ndarray]
    medium_actor: DeterministicPolicy
    medium_step: int
    final_actor: DeterministicPolicy
    curve: list[dict[str, float]]


def train_td3(
    env: str,
    total_steps: int,
    seed: int,
    device: torch.device,
    td3: TD3Config,
    start_steps: int = 5000,
    medium_target: float | None = None,
    medium_budget: int | None = None,
    stop_at_medium: bool = True,
    eval_every: int = 5000,
    eval_episodes: int = 5,
    max_episode_steps: int = 1000,
    progress: bool = True,
) -> TrainResult:
    """Train TD3 for up to `total_steps` env steps, one gradient step per env step, the first
    `start_steps` with uniform random actions; then π(s) plus N(0, expl_noise) exploration noise
    from a numpy generator seeded with `seed`.

    The "medium" snapshot is taken at the first evaluation whose normalised score reaches
    `medium_target` (D4RL's medium policies were early-stopped SAC), or at `medium_budget`
    steps if the target is not reached by then. With `stop_at_medium` training ends there.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    e = make_env(env)
    obs_dim, act_dim = e.observation_space.shape[0], e.action_space.shape[0]
    e.action_space.seed(seed)
    agent = TD3(td3, obs_dim, act_dim, max_action=1.0, device=device)
    buf = ReplayBuffer(total_steps, obs_dim, act_dim, device)
    log = TransitionLog(total_steps, obs_dim, act_dim)
    medium_budget = total_steps if medium_budget is None else min(medium_budget, total_steps)
    curve: list[dict[str, float]] = []
    medium: tuple[DeterministicPolicy, int, dict[str, np.ndarray]] | None = None

    obs, _ = e.reset(seed=seed)
    ep_len = 0
    bar = tqdm(total=total_steps, desc=f"TD3 {env}", unit="step", disable=not progress, mininterval=1.0)
    for step in range(1, total_steps + 1):
        if step <= start_steps:
            action = e.action_space.sample()
        else:
            action = agent.act(obs, "eval", gen) + rng.normal(0.0, td3.expl_noise, size=act_dim)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
        next_obs, rew, term, trunc, _ = e.step(action)
        ep_len += 1
        trunc = bool(trunc) or ep_len >= max_episode_steps
        i = log.add(obs, action, float(rew), next_obs, bool(term), trunc)
        buf.add(log.obs[i], log.act[i], float(rew), log.next_obs[i], bool(term))
        obs = next_obs
        if term or trunc:
            obs, _ = e.reset()  # the env's own RNG, seeded by the first reset, continues
            ep_len = 0
        if step >= start_steps:
            agent.update(sample_uniform(buf, td3.batch_size, gen))
        bar.update(1)

        if step % eval_every == 0 or step in (total_steps, medium_budget):
            ret = evaluate(agent, env, eval_episodes, seed + 10_000, max_steps=max_episode_steps)["return_mean"]
            score = normalized_score(env, ret)
            curve.append({"step": step, "return": ret, "normalized": score})
            bar.set_postfix(eval_return=f"{ret:.0f}", score=f"{score:.1f}")
            reached = medium_target is not None and score >= medium_target
            if medium is None and (reached or step >= medium_budget):
                medium = (copy.deepcopy(agent.actor).cpu(), step, log.arrays())
                if stop_at_medium:
                    break
    bar.close()
    e.close()
    if medium is None:  # budget ended between evaluations
        medium = (copy.deepcopy(agent.actor).cpu(), log.n, log.arrays())
    return TrainResult(
        replay=medium[2],
        medium_actor=medium[0],
        medium_step=medium[1],
        final_actor=copy.deepcopy(agent.actor).cpu(),
        curve=curve,
    )
