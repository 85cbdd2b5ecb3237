"""Evaluation: deterministic-mode episodes on a fresh env, scored on the D4RL scale."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cfdg import envs
from cfdg.agents.base import Agent


def evaluate(agent: Agent, env: str, episodes: int, seed: int, max_steps: int | None = None) -> dict[str, Any]:
    """Deterministic-mode returns over `episodes` episodes reset with seeds seed, seed+1, ...

    Uses its own env and generator, so evaluating never changes the training trajectory. Episodes
    end where the env ends them, or after `max_steps` (the dataset builder's shorter episodes).
    """
    e = envs.make_env(env)
    gen = torch.Generator().manual_seed(seed)
    returns, lengths = [], []
    for i in range(episodes):
        obs, _ = e.reset(seed=seed + i)
        total, n, done = 0.0, 0, False
        while not done:
            obs, r, term, trunc, _ = e.step(agent.act(obs, "eval", gen))
            total, n = total + float(r), n + 1
            done = term or trunc or n == max_steps
        returns.append(total)
        lengths.append(n)
    e.close()
    scores = [envs.normalized_score(env, r) for r in returns]
    return {
        "returns": returns,
        "lengths": lengths,
        "return_mean": float(np.mean(returns)),
        "normalized_scores": scores,
        "normalized_score": float(np.mean(scores)),
    }
