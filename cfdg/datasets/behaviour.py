"""TD3 behaviour-policy learner for building D4RL-style datasets without downloads.

D4RL's behaviour policies were SAC agents; TD3 (Fujimoto et al. 2018) is used here because
its deterministic actor makes datasets reproducible bit for bit and its update is cheaper.
Networks, Adam and Polyak averaging are the agents' (`networks.TwinQ`: both Q functions in one
batched matmul per layer). The replay buffer and `evaluate` stay here: this buffer keeps rows in
insertion order with their timeouts (the medium-replay dataset is its prefix) and samples with a
generator on the training device; the agents' ring buffer keeps no timeouts and samples with a CPU
generator, which would change datasets built on a GPU. The agents' `evaluate` needs an `Agent`
and ignores `max_episode_steps`. Either way the buffer lives on the training device: an update
never copies data between host and device or waits on the host.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from cfdg.agents.networks import DeterministicPolicy, TwinQ
from cfdg.agents.optim import adam, frozen_copy, soft_update
from cfdg.envs import make_env, normalized_score


@dataclasses.dataclass(frozen=True)
class TD3Params:
    """TD3 defaults from the original paper (and APL0's TD3)."""

    hidden: int = 256
    batch_size: int = 256
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    expl_noise: float = 0.1
    start_steps: int = 5000


class ReplayBuffer:
    """Fixed-capacity transition arrays on `device`; rows kept in insertion order for medium-replay."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        def z(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.obs, self.next_obs = z(capacity, obs_dim), z(capacity, obs_dim)
        self.act, self.rew = z(capacity, act_dim), z(capacity)
        self.term, self.trunc = z(capacity, dtype=torch.bool), z(capacity, dtype=torch.bool)
        self.size, self.capacity = 0, capacity

    def add(self, obs: np.ndarray, act: np.ndarray, rew: float, next_obs: np.ndarray, term: bool, trunc: bool) -> None:
        i = self.size
        self.obs[i] = torch.as_tensor(obs)
        self.act[i] = torch.as_tensor(act)
        self.rew[i] = rew
        self.next_obs[i] = torch.as_tensor(next_obs)
        self.term[i] = term
        self.trunc[i] = trunc
        self.size += 1

    def sample(self, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(0, self.size, (batch,), generator=generator, device=generator.device)
        return self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.term[idx]

    def arrays(self) -> dict[str, np.ndarray]:
        n = self.size
        return {
            "observations": self.obs[:n].cpu().numpy().copy(),
            "actions": self.act[:n].cpu().numpy().copy(),
            "rewards": self.rew[:n].cpu().numpy().copy(),
            "next_observations": self.next_obs[:n].cpu().numpy().copy(),
            "terminals": self.term[:n].cpu().numpy().copy(),
            "timeouts": self.trunc[:n].cpu().numpy().copy(),
        }


class TD3:
    """Actor, fused twin critic, their targets and optimisers; `update` is one gradient step."""

    def __init__(self, obs_dim: int, act_dim: int, p: TD3Params, device: torch.device) -> None:
        self.p, self.device = p, device
        hidden = (p.hidden, p.hidden)
        self.actor = DeterministicPolicy(obs_dim, act_dim, hidden, max_action=1.0).to(device)
        self.critic = TwinQ(obs_dim, act_dim, hidden).to(device)
        self.actor_target = frozen_copy(self.actor)
        self.critic_target = frozen_copy(self.critic)
        self.actor_opt = adam(self.actor.parameters(), p.lr, device, fused=True)
        self.critic_opt = adam(self.critic.parameters(), p.lr, device, fused=True)
        self.updates = 0

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        o = torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)
        return self.actor(o)[0].cpu().numpy()

    def update(self, batch: tuple[torch.Tensor, ...]) -> None:
        p = self.p
        obs, act, rew, next_obs, term = batch
        with torch.no_grad():
            noise = (torch.randn_like(act) * p.policy_noise).clamp(-p.noise_clip, p.noise_clip)
            next_act = (self.actor_target(next_obs) + noise).clamp(-1.0, 1.0)
            q_next = self.critic_target.min(next_obs, next_act)
            target = rew + p.gamma * (~term) * q_next
        q = self.critic(obs, act)  # [2, B]
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        if self.updates % p.policy_delay:
            return
        self.critic.requires_grad_(False)
        actor_loss = -self.critic(obs, self.actor(obs))[0].mean()  # Q1 only, as TD3
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)
        soft_update(self.actor_target, self.actor, p.tau)
        soft_update(self.critic_target, self.critic, p.tau)


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env: str, seed: int, episodes: int, max_steps: int) -> float:
    """Mean undiscounted return of the deterministic policy over `episodes` seeded episodes."""
    e = make_env(env)
    total = 0.0
    for k in range(episodes):
        obs, _ = e.reset(seed=seed + k)
        for _ in range(max_steps):
            obs, r, term, trunc, _ = e.step(policy(obs))
            total += float(r)
            if term or trunc:
                break
    e.close()
    return total / episodes


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
    params: TD3Params = TD3Params(),
    medium_target: float | None = None,
    medium_budget: int | None = None,
    stop_at_medium: bool = True,
    eval_every: int = 5000,
    eval_episodes: int = 5,
    max_episode_steps: int = 1000,
    progress: bool = True,
) -> TrainResult:
    """Train TD3 for up to `total_steps` env steps, one gradient step per env step.

    The "medium" snapshot is taken at the first evaluation whose normalised score reaches
    `medium_target` (D4RL's medium policies were early-stopped SAC), or at `medium_budget`
    steps if the target is not reached by then. With `stop_at_medium` training ends there.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator(device=device).manual_seed(seed)
    e = make_env(env)
    obs_dim, act_dim = e.observation_space.shape[0], e.action_space.shape[0]
    e.action_space.seed(seed)
    agent = TD3(obs_dim, act_dim, params, device)
    buf = ReplayBuffer(total_steps, obs_dim, act_dim, device)
    medium_budget = total_steps if medium_budget is None else min(medium_budget, total_steps)
    curve: list[dict[str, float]] = []
    medium: tuple[DeterministicPolicy, int, dict[str, np.ndarray]] | None = None

    obs, _ = e.reset(seed=seed)
    ep_len, episode = 0, 0
    bar = tqdm(total=total_steps, desc=f"TD3 {env}", unit="step", disable=not progress, mininterval=1.0)
    for step in range(1, total_steps + 1):
        if step <= params.start_steps:
            action = e.action_space.sample()
        else:
            action = agent.act(obs) + rng.normal(0.0, params.expl_noise, size=act_dim)
            action = np.clip(action, -1.0, 1.0).astype(np.float32)
        next_obs, rew, term, trunc, _ = e.step(action)
        ep_len += 1
        trunc = bool(trunc) or ep_len >= max_episode_steps
        buf.add(obs, action, float(rew), next_obs, bool(term), trunc and not term)
        obs = next_obs
        if term or trunc:
            episode += 1
            obs, _ = e.reset()  # the env's own RNG, seeded by the first reset, continues
            ep_len = 0
        if step >= params.start_steps:
            agent.update(buf.sample(params.batch_size, gen))
        bar.update(1)

        if step % eval_every == 0 or step in (total_steps, medium_budget):
            ret = evaluate(agent.act, env, seed + 10_000, eval_episodes, max_episode_steps)
            score = normalized_score(env, ret)
            curve.append({"step": step, "return": ret, "normalized": score})
            bar.set_postfix(eval_return=f"{ret:.0f}", score=f"{score:.1f}")
            reached = medium_target is not None and score >= medium_target
            if medium is None and (reached or step >= medium_budget):
                medium = (copy.deepcopy(agent.actor).cpu(), step, buf.arrays())
                if stop_at_medium:
                    break
    bar.close()
    e.close()
    if medium is None:  # budget ended between evaluations
        medium = (copy.deepcopy(agent.actor).cpu(), buf.size, buf.arrays())
    return TrainResult(
        replay=medium[2],
        medium_actor=medium[0],
        medium_step=medium[1],
        final_actor=copy.deepcopy(agent.actor).cpu(),
        curve=curve,
    )
