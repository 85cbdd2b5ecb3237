"""TD3 behaviour-policy learner for building D4RL-style datasets without downloads.

D4RL's behaviour policies were SAC agents; TD3 (Fujimoto et al. 2018) is used here because
its deterministic actor makes datasets reproducible bit for bit and its update is cheaper.
The twin critics are one module with stacked weights, so both Q functions run in one batched
matmul per layer, and the replay buffer lives on the training device as preallocated tensors:
an update never copies data between host and device or waits on the host.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cfdg.envs import make_env, normalized_score


class EnsembleMLP(nn.Module):
    """`n` independent ReLU MLPs evaluated together: [B, in] -> [n, B, out] via batched matmuls."""

    def __init__(self, n: int, in_dim: int, hidden: int, out_dim: int, depth: int = 2) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * depth + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(dims):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(torch.empty(n, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, fan_out).uniform_(-bound, bound)))
        self.n = n

    def forward(self, x: torch.Tensor, members: int | None = None) -> torch.Tensor:
        """Outputs of the first `members` networks (all by default); [members, B, out]."""
        n = self.n if members is None else members
        h = x.unsqueeze(0).expand(n, -1, -1)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b[:n], h, w[:n])
            if i < last:
                h = torch.relu(h)
        return h


class Actor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, act_dim)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs))


@dataclasses.dataclass(frozen=True)
class TD3Params:
    """TD3 defaults from the original paper (and APL's TD3 in REFERENCE.md)."""

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
        self.actor = Actor(obs_dim, act_dim, p.hidden).to(device)
        self.critic = EnsembleMLP(2, obs_dim + act_dim, p.hidden, 1).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=p.lr, fused=True)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=p.lr, fused=True)
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
            q_next = self.critic_target(torch.cat([next_obs, next_act], -1)).squeeze(-1).min(0).values
            target = rew + p.gamma * (~term) * q_next
        q = self.critic(torch.cat([obs, act], -1)).squeeze(-1)  # [2, B]
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.updates += 1
        if self.updates % p.policy_delay:
            return
        self.critic.requires_grad_(False)
        actor_loss = -self.critic(torch.cat([obs, self.actor(obs)], -1), members=1).mean()  # Q1 only, as TD3
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        self.critic.requires_grad_(True)
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
                torch._foreach_lerp_(list(tgt.parameters()), list(net.parameters()), p.tau)


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
    medium_actor: Actor
    medium_step: int
    final_actor: Actor
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
    medium: tuple[Actor, int, dict[str, np.ndarray]] | None = None

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
