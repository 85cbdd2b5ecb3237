"""Adaptive Policy Learning (Zheng et al., 2023), readable top to bottom, in APL0's two forms.

APL is one agent whose loss depends on where the batch came from: λ = 1 on offline-side batches,
0 on online ones (paper eq. 3). APL0 (zhan0903/APL0, the code the paper ran, A.2) has two agents
that carry the switch; `agent.apl_engine` picks one:

`cql` (`APLCQL`), APL0 `agents/GCQL.py`, the engine its `config/exp.yaml` names and the one the
paper's eq. 2-3 describe: SAC with an ensemble of `apl_critics` Q networks, plus CQL's
conservative term on offline-side batches only:
  Q:  Σ_heads MSE(Q_i(s, a), r + γ(1 − d)·min of two random target heads at a' ~ π(s'))
      + λ·cql_alpha·(logsumexp over {random, π(s), π(s')} actions of Q_i − Q_i(s, a)),
  π:  α·log π(ã|s) − mean_i Q_i(s, ã), α tuned to entropy −|A|.
The CQL term is `cql_gap` of cfdg/agents/calql.py (one CQL in the project); rlkit's
tanh-Gaussian policy and init (rlkit_cql/torch/sac/policies.py, networks.py) as APL0 builds them.

`td3bc` (`APLTD3BC`), APL0 `agents/td3_bc_gc.py`: TD3 whose actor loss switches its BC term,
  L_π = −(α / mean|Q|)·mean Q(s, π(s)) + λ·MSE(π(s), a).
Q is normalised on both sides, so online and offline actor gradients have the same scale and
share Adam's moments sensibly; only the behaviour-cloning term switches. The critic is plain TD3
(clipped double Q, target policy smoothing); the actor and all targets move every
`policy_delay` critic steps. Offline pretraining is TD3+BC (every batch λ = 1). The CPU studies
run this form (cheaper per update).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn.functional import mse_loss

from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.calql import TanhGaussianPolicy, cql_gap, q_many, sample_actions
from cfdg.agents.config import AgentConfig
from cfdg.agents.networks import DeterministicPolicy, EnsembleLinear, TwinQ
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
    """What both forms share: APL0's Bernoulli replay with a 20K FIFO online buffer. Not an agent by
    itself: `registry.make_agent` builds the engine `agent.apl_engine` names."""

    algo = "apl"
    paradigm = "bernoulli"
    online_buffer = 20_000  # APL0 online_size
    legacy_engine = "td3bc"  # checkpoints from before the engines were named are TD3+BC


class APLTD3BC(APL):
    engine = "td3bc"
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


# --- the CQL engine (APL0 agents/GCQL.py) ----------------------------------------------------------


def rlkit_init_(module: nn.Module, last_init_w: float) -> None:
    """rlkit's Mlp init, as APL0's networks start: hidden weights U(±1/√size[0]) (rlkit's
    `fanin_init` reads size[0] of an nn.Linear weight, its output width), hidden biases 0.1, the
    last layer U(±last_init_w) (policy 1e-3, Q 3e-3). Works on `mlp` and on `TwinQ`'s ensembles."""
    *hidden, last = [m for m in module.modules() if isinstance(m, nn.Linear | EnsembleLinear)]
    with torch.no_grad():
        for layer in hidden:
            out_width = layer.weight.shape[0] if isinstance(layer, nn.Linear) else layer.weight.shape[-1]
            layer.weight.uniform_(-1.0 / math.sqrt(out_width), 1.0 / math.sqrt(out_width))
            layer.bias.fill_(0.1)
        last.weight.uniform_(-last_init_w, last_init_w)
        last.bias.uniform_(-last_init_w, last_init_w)


class APLCQL(APL):
    engine = "cql"
    _modules = ("actor", "critic", "target_critic", "log_alpha")
    _optims = ("actor_optim", "critic_optim", "alpha_optim")

    def __init__(self, cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        super().__init__(cfg, obs_dim, act_dim, max_action, device)
        h = cfg.hidden_dims  # APL0: [256, 256, 256] for the policy and every Q
        log_std_range = (cfg.log_std_min, cfg.log_std_max)
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, h, self.max_action, log_std_range, affine_log_std=False)
        self.critic = TwinQ(obs_dim, act_dim, h, n=cfg.apl_critics)
        rlkit_init_(self.actor.net, 1e-3)
        rlkit_init_(self.critic, 3e-3)
        self.actor.to(device)
        self.critic.to(device)
        self.target_critic = frozen_copy(self.critic)
        self.log_alpha = nn.ParameterDict({"value": nn.Parameter(torch.zeros((), device=device))})
        self.actor_optim = adam(self.actor.parameters(), cfg.cql_policy_lr, device, cfg.fused_adam)
        self.critic_optim = adam(self.critic.parameters(), cfg.lr, device, cfg.fused_adam)
        self.alpha_optim = adam(self.log_alpha.parameters(), cfg.cql_policy_lr, device, cfg.fused_adam)
        self.target_entropy = -float(act_dim)

    def update(self, batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        lam = 1.0 if batch.lam is None else batch.lam
        obs, next_obs = self.norm(batch.observations), self.norm(batch.next_observations)
        act, done = batch.actions, batch.dones
        # Temperature first; the actor's loss then uses the new α (GCQL compute_loss_pi).
        with self.autocast():
            pi, logp = sample_actions(self.actor, obs)
            log_alpha = self.log_alpha["value"]
            alpha_loss = -(log_alpha * (logp + self.target_entropy).detach()).mean()
        self.alpha_optim.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_optim.step()
        alpha = log_alpha.detach().exp()

        with self.autocast():
            actor_loss = (alpha * logp - self.critic(obs, pi).float().mean(0)).mean()  # the ensemble's mean Q

            # TD target: the min of two target heads drawn at random (GCQL compute_loss_ensembleq).
            with torch.no_grad():
                next_act, _ = sample_actions(self.actor, next_obs)
                heads = torch.randperm(c.apl_critics, device=self.device)[:2]
                target = self.target_critic(next_obs, next_act)[heads].min(0).values.float()
                q_target = self.reward(batch.rewards) + c.discount * (1.0 - done) * target
            qs = self.critic(obs, act).float()
            td_loss = (qs - q_target).pow(2).mean(dim=1)  # one MSE per head
            critic_loss = td_loss.sum()
            gap = torch.zeros((), device=self.device)
            if lam:  # offline side (λ = 1): CQL's conservative term; online batches skip it
                n = c.cql_n_actions
                with torch.no_grad():
                    a_rand = torch.rand((obs.shape[0], n, self.act_dim), device=self.device) * 2 - 1
                    a_curr, logp_curr = sample_actions(self.actor, obs, n)
                    a_next, logp_next = sample_actions(self.actor, next_obs, n)
                q_ood = q_many(self.critic, obs, torch.cat([a_rand, a_curr, a_next], dim=1)).float()
                q_rand, q_curr, q_next = q_ood.split(n, dim=-1)
                args = (logp_curr, logp_next, None, self.act_dim, c.cql_temp, c.cql_importance_sample)
                gaps = cql_gap(qs, q_rand, q_curr, q_next, *args).mean(dim=1)  # [heads]
                critic_loss = critic_loss + c.cql_alpha * gaps.sum()
                gap = gaps.detach().mean()

        # Every loss is formed with the critic before its step (CORL's order, as calql.py).
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(self.actor.parameters()))
        self.actor_optim.step()
        self.critic_optim.zero_grad(set_to_none=True)
        critic_loss.backward(inputs=list(self.critic.parameters()))
        self.critic_optim.step()
        soft_update(self.target_critic, self.critic, c.target_rate)
        self.grad_steps += 1
        return {
            "q_loss": td_loss.detach().mean(),
            "cql_gap": gap,
            "actor_loss": actor_loss.detach(),
            "alpha": alpha.float(),
            "q_mean": qs.detach().mean(),
        }

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        """A sample of π while exploring (APL0's explore: policy.get_action), tanh(mean) in evaluation."""
        s = self.obs_tensor(obs)
        eps = noise((self.act_dim,), gen, self.device) if mode == "explore" else None
        a, _ = self.actor(s, eps)
        return a.clamp(-self.max_action, self.max_action).cpu().numpy()


ENGINES: dict[str, type[APL]] = {"td3bc": APLTD3BC, "cql": APLCQL}
