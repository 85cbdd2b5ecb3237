"""Implicit Q-Learning (Kostrikov et al., 2021), readable top to bottom.

Losses, each touching one network so a single backward and one fused Adam step serve all three:
  V:  expectile regression of min(Q_target(s, a)) − V(s) with expectile `iql_tau`;
  Q:  MSE to r + γ(1 − d)·V(s') for both heads of the twin critic;
  π:  advantage-weighted regression, weights exp(β·(Q_target − V)) capped at `exp_adv_max`.
The actor's lr follows a cosine over the offline steps and stays at `lr` online.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.config import AgentConfig
from cfdg.agents.networks import GaussianPolicy, TwinQ, ValueNet, inference
from cfdg.agents.optim import adam, frozen_copy, soft_update


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric L2: weight tau where diff > 0, 1 − tau where diff < 0."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


class IQL(Agent):
    algo = "iql"
    paradigm = "concat"
    _modules = ("critic", "target_critic", "vf", "actor")
    _optims = ("optim",)

    def __init__(self, cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        super().__init__(cfg, obs_dim, act_dim, max_action, device)
        h = cfg.hidden_dims
        self.critic = TwinQ(obs_dim, act_dim, h).to(device)
        self.target_critic = frozen_copy(self.critic)
        self.vf = ValueNet(obs_dim, h).to(device)
        self.actor = self._new_actor()
        self.optim = self._new_optim()

    def _new_actor(self) -> GaussianPolicy:
        c = self.cfg
        log_std_range = (c.log_std_min, c.log_std_max)
        policy = GaussianPolicy(
            self.obs_dim, self.act_dim, c.hidden_dims, self.max_action, log_std_range, c.actor_dropout
        )
        return policy.to(self.device)

    def _new_optim(self) -> torch.optim.Adam:
        groups = [
            {"params": list(self.critic.parameters())},
            {"params": list(self.vf.parameters())},
            {"params": list(self.actor.parameters())},  # group 2: the scheduled actor
        ]
        return adam(groups, self.cfg.lr, self.device, self.cfg.fused_adam)

    def _actor_lr(self) -> float:
        c = self.cfg
        if self.phase != "offline" or not c.actor_cosine or self.offline_steps_total <= 0:
            return c.lr
        t = min(self.grad_steps, self.offline_steps_total) / self.offline_steps_total
        return c.lr * 0.5 * (1.0 + math.cos(math.pi * t))

    def update(self, batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        obs, next_obs = self.norm(batch.observations), self.norm(batch.next_observations)
        act, done = batch.actions, batch.dones
        with self.autocast():
            with torch.no_grad():
                target_q = self.target_critic.min(obs, act).float()
                next_v = self.vf(next_obs).float()
                q_target = self.reward(batch.rewards) + c.discount * (1.0 - done) * next_v
            v = self.vf(obs).float()
            adv = target_q - v
            v_loss = expectile_loss(adv, c.iql_tau)
            qs = self.critic(obs, act).float()
            q_loss = (qs - q_target).pow(2).mean(dim=1).mean()
            exp_adv = torch.exp(c.iql_beta * adv.detach()).clamp(max=c.exp_adv_max)
            actor_loss = (exp_adv * -self.actor.log_prob(obs, act).float()).mean()

        self.optim.param_groups[2]["lr"] = self._actor_lr()
        self.optim.zero_grad(set_to_none=True)
        (v_loss + q_loss + actor_loss).backward()
        self.optim.step()
        soft_update(self.target_critic, self.critic, c.target_rate)
        self.grad_steps += 1
        return {
            "q_loss": q_loss.detach(),
            "v_loss": v_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_mean": qs.detach().mean(),
            "v_mean": v.detach().mean(),
            "adv_mean": adv.detach().mean(),
        }

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        """Sample from the Gaussian while exploring (CORL online IQL), its mean in evaluation."""
        with inference(self.actor):
            mean, log_std = self.actor(self.obs_tensor(obs))
        if mode == "explore":
            mean = mean + log_std.exp() * noise(mean.shape, gen, self.device)
        return mean.clamp(-self.max_action, self.max_action).cpu().numpy()
