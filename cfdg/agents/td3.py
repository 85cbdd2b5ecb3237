"""TD3 (Fujimoto et al., 2018), readable top to bottom: the project's one TD3.

  Q:  both heads regress to r + γ(1 − d)·min Q_target(s', a'), with target policy smoothing
      a' = clip(π_target(s') + clip(ε, ±noise_clip)·max_action), ε ~ N(0, policy_noise²);
  π:  every `policy_delay` critic steps, `actor_loss` (TD3: −mean Q_1(s, π(s))), then both targets
      move towards their networks by Polyak averaging (`target_rate`).
APL's `td3bc` engine extends it and overrides only `actor_loss` (as d3rlpy's TD3+BC extends TD3);
the dataset builder trains its behaviour policy with it, so both run the same update.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch

from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.config import AgentConfig
from cfdg.agents.networks import DeterministicPolicy, TwinQ
from cfdg.agents.optim import adam, frozen_copy, soft_update, step
from cfdg.config import check


@dataclasses.dataclass(frozen=True)
class TD3Config(AgentConfig):
    """TD3's own keys; defaults from the TD3 paper (and APL0's TD3)."""

    algo: str = "td3"
    policy_noise: float = 0.2  # target policy smoothing: std of the noise on π_target(s'), × max_action
    noise_clip: float = 0.5  # its clip
    policy_delay: int = 2  # critic steps per actor and target update
    expl_noise: float = 0.1  # exploring: Gaussian action noise of std expl_noise · max_action

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.policy_delay >= 1, "agent.policy_delay", f"must be >= 1, got {self.policy_delay}")
        check(self.noise_clip >= 0 and self.policy_noise >= 0, "agent", "policy_noise and noise_clip must be >= 0")
        check(self.expl_noise >= 0, "agent.expl_noise", f"must be >= 0, got {self.expl_noise}")


class TD3(Agent):
    """Deterministic actor, fused twin critic (`TwinQ`), their targets and two Adam optimisers."""

    algo = "td3"
    config_class = TD3Config
    _modules = ("actor", "target_actor", "critic", "target_critic")
    _optims = ("actor_optim", "critic_optim")
    actor_metrics: ClassVar[tuple[str, ...]] = ("actor_loss",)  # what `actor_loss` reports, first the loss

    def __init__(self, cfg: TD3Config, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        super().__init__(cfg, obs_dim, act_dim, max_action, device)
        self.actor = DeterministicPolicy(obs_dim, act_dim, cfg.hidden_dims, self.max_action).to(device)
        self.target_actor = frozen_copy(self.actor)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden_dims).to(device)
        self.target_critic = frozen_copy(self.critic)
        self.actor_optim = adam(self.actor.parameters(), cfg.lr, device, cfg.fused_adam)
        self.critic_optim = adam(self.critic.parameters(), cfg.lr, device, cfg.fused_adam)
        # The actor moves every `policy_delay` steps; between, updates report its last metrics.
        self._last_actor = dict.fromkeys(self.actor_metrics, torch.zeros((), device=device))

    def actor_loss(self, q: torch.Tensor, pi: torch.Tensor, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, further metrics) of the actor from Q_1(s, π(s)); TD3 maximises Q."""
        return -q.mean(), {}

    def update(self, batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        obs, next_obs = self.norm(batch.observations), self.norm(batch.next_observations)
        act = batch.actions
        with self.autocast():
            with torch.no_grad():
                smoothing = (torch.randn_like(act) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
                next_act = (self.target_actor(next_obs) + smoothing * self.max_action).clamp(
                    -self.max_action, self.max_action
                )
                target_q = self.target_critic.min(next_obs, next_act).float()
                q_target = self.reward(batch.rewards) + c.discount * (1.0 - batch.dones) * target_q
            qs = self.critic(obs, act).float()
            q_loss = (qs - q_target).pow(2).mean(dim=1).sum()  # MSE(Q1) + MSE(Q2)
        step(self.critic_optim, q_loss)
        self.grad_steps += 1

        if self.grad_steps % c.policy_delay == 0:
            with self.autocast():
                pi = self.actor(obs)
                q = self.critic(obs, pi)[0].float()  # the first head only, as TD3
                loss, extra = self.actor_loss(q, pi.float(), batch)
            step(self.actor_optim, loss)
            soft_update(self.target_critic, self.critic, c.target_rate)
            soft_update(self.target_actor, self.actor, c.target_rate)
            self._last_actor = {"actor_loss": loss.detach(), **{k: v.detach() for k, v in extra.items()}}
        return {"q_loss": q_loss.detach(), "q_mean": qs.detach().mean(), **self._last_actor}

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        """Exploring: Gaussian noise of std expl_noise·max_action on π(s); π(s) itself in evaluation."""
        a = self.actor(self.obs_tensor(obs))
        if mode == "explore":
            a = a + self.cfg.expl_noise * self.max_action * noise(a.shape, gen, self.device)
        return a.clamp(-self.max_action, self.max_action).cpu().numpy()
