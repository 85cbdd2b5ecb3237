"""Adaptive Policy Learning (Zheng et al., 2023), readable top to bottom.

One TD3 agent whose actor loss depends on where the batch came from (λ, paper eq. 3), as APL0
(`agents/td3_bc_gc.py`, the code the paper ran) writes it:
  L_π = −(α / mean|Q|)·mean Q(s, π(s)) + λ·MSE(π(s), a),   λ = 0 online, 1 offline.
Q is normalised on both sides, so online and offline actor gradients have the same scale and
share Adam's moments sensibly; only the behaviour-cloning term switches. The critic is plain TD3
(clipped double Q, target policy smoothing); the actor and all targets move every
`policy_delay` critic steps. Offline pretraining is TD3+BC (every batch λ = 1).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.functional import mse_loss

from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.config import AgentConfig
from cfdg.agents.networks import DeterministicPolicy, TwinQ
from cfdg.agents.optim import adam, frozen_copy, soft_update


def actor_loss(
    q: torch.Tensor, pi: torch.Tensor, actions: torch.Tensor, lam: float, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, bc_term): −(α / mean|Q|)·mean Q, plus the BC term MSE(π(s), a) when lam == 1."""
    scale = alpha / q.abs().mean().detach()
    if lam:
        bc = mse_loss(pi, actions)
        return -scale * q.mean() + bc, bc
    return -scale * q.mean(), torch.zeros((), device=q.device)


class APL(Agent):
    algo = "apl"
    paradigm = "bernoulli"
    online_buffer = 20_000  # APL's FIFO online buffer
    _modules = ("actor", "target_actor", "critic", "target_critic")
    _optims = ("actor_optim", "critic_optim")

    def __init__(self, cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        super().__init__(cfg, obs_dim, act_dim, max_action, device)
        self.actor = DeterministicPolicy(obs_dim, act_dim, cfg.hidden_dims, self.max_action).to(device)
        self.target_actor = frozen_copy(self.actor)
        self.critic = TwinQ(obs_dim, act_dim, cfg.hidden_dims).to(device)
        self.target_critic = frozen_copy(self.critic)
        self.actor_optim = adam(self.actor.parameters(), cfg.lr, device, cfg.fused_adam)
        self.critic_optim = adam(self.critic.parameters(), cfg.lr, device, cfg.fused_adam)
        self._last_actor = {"actor_loss": torch.zeros((), device=device), "bc_loss": torch.zeros((), device=device)}

    def update(self, batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        lam = 1.0 if batch.lam is None else batch.lam
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
            q_loss = (qs - q_target).pow(2).mean(dim=1).sum()  # TD3: MSE(Q1) + MSE(Q2)
        self.critic_optim.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_optim.step()
        self.grad_steps += 1

        if self.grad_steps % c.policy_delay == 0:
            with self.autocast():
                pi = self.actor(obs)
                q = self.critic(obs, pi)[0].float()  # TD3 uses the first head for the actor
                loss, bc = actor_loss(q, pi.float(), act, lam, c.bc_alpha)
            self.actor_optim.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_optim.step()
            soft_update(self.target_critic, self.critic, c.target_rate)
            soft_update(self.target_actor, self.actor, c.target_rate)
            self._last_actor = {"actor_loss": loss.detach(), "bc_loss": bc.detach()}
        return {"q_loss": q_loss.detach(), "q_mean": qs.detach().mean(), **self._last_actor}

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        """TD3 exploration: Gaussian noise of std expl_noise·max_action; the mean in evaluation."""
        a = self.actor(self.obs_tensor(obs))
        if mode == "explore":
            a = a + self.cfg.expl_noise * self.max_action * noise(a.shape, gen, self.device)
        return a.clamp(-self.max_action, self.max_action).cpu().numpy()
