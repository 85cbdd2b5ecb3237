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
The CQL term is `conservative_gap` of cfdg/agents/calql.py (one CQL in the project); rlkit's
tanh-Gaussian policy and init (rlkit_cql/torch/sac/policies.py, networks.py) as APL0 builds them.

`td3bc` (`APLTD3BC`), APL0 `agents/td3_bc_gc.py`: the project's TD3 (cfdg/agents/td3.py: clipped
double Q, target policy smoothing, the actor and all targets every `policy_delay` critic steps)
with only its actor loss overridden, which switches its BC term (as d3rlpy's TD3+BC extends TD3),
  L_π = −(α / mean|Q|)·mean Q(s, π(s)) + λ·MSE(π(s), a).
Q is normalised on both sides, so online and offline actor gradients have the same scale and
share Adam's moments sensibly; only the behaviour-cloning term switches. Offline pretraining is
TD3+BC (every batch λ = 1). The CPU studies run this form (cheaper per update).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.functional import mse_loss

from cfdg import envs
from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.calql import CQLConfig, TanhGaussianPolicy, conservative_gap, sample_actions
from cfdg.agents.networks import EnsembleLinear, TwinQ
from cfdg.agents.optim import adam, frozen_copy, soft_update, step
from cfdg.agents.td3 import TD3, TD3Config
from cfdg.config import check

AplEngine = Literal["td3bc", "cql"]


@dataclasses.dataclass(frozen=True)
class APLConfig(TD3Config, CQLConfig):
    """APL's keys: the engine, TD3's keys (`td3bc`), the CQL term's (`cql`) and each engine's own."""

    algo: str = "apl"
    # `td3bc`: TD3 online, TD3+BC offline, APL0 agents/td3_bc_gc.py (the CPU studies run it). `cql`:
    # CQL whose conservative term is skipped on online batches, APL0 agents/GCQL.py, the engine APL0's
    # config/exp.yaml names (configs/paper/apl.yaml). Checkpoints record the engine and load only as it.
    apl_engine: AplEngine = "td3bc"
    bc_alpha: float = 2.5  # `td3bc`: α of the Q-normalised actor loss
    apl_critics: int = 5  # `cql`: Q ensemble size (GCQL: 5; each TD target is the min of 2 random heads)
    # `cql`: log-std clamp of its policy; APL0's rlkit policy (rlkit_cql/torch/sac/policies.py) uses −5.
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        w = "agent"
        check(self.bc_alpha > 0, f"{w}.bc_alpha", f"must be > 0, got {self.bc_alpha}")
        check(self.apl_critics >= 2, f"{w}.apl_critics", f"must be >= 2 (targets take 2), got {self.apl_critics}")
        check(self.log_std_min < self.log_std_max, w, "log_std_min must be < log_std_max")


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
    """What both forms share: APL0's Bernoulli replay with a 20K FIFO online buffer, locomotion only.
    Not an agent by itself: `registry.make_agent` builds the engine `agent.apl_engine` names."""

    algo = "apl"
    config_class = APLConfig
    paradigm = "bernoulli"
    online_buffer = 20_000  # APL0 online_size
    runs_on = "locomotion only, as the paper"  # its TD3/TD3+BC and GCQL settings are locomotion's
    legacy_engine = "td3bc"  # checkpoints from before the engines were named are TD3+BC

    @classmethod
    def supports(cls, env: str) -> bool:
        return not envs.is_robotics(env)

    @classmethod
    def form(cls, cfg: APLConfig) -> type[Agent]:
        return ENGINES[cfg.apl_engine]


class APLTD3BC(APL, TD3):
    """TD3 (cfdg/agents/td3.py) with APL's actor loss; everything else is TD3's."""

    engine = "td3bc"
    actor_metrics = ("actor_loss", "bc_loss")

    def actor_loss(self, q: torch.Tensor, pi: torch.Tensor, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        lam = 1.0 if batch.lam is None else batch.lam
        loss, bc = actor_loss(q, pi, batch.actions, lam, self.cfg.bc_alpha)
        return loss, {"bc_loss": bc}


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

    def __init__(self, cfg: APLConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
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
        step(self.alpha_optim, alpha_loss)
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
                gaps = conservative_gap(self.actor, self.critic, obs, next_obs, qs, c)[0].mean(dim=1)  # [heads]
                critic_loss = critic_loss + c.cql_alpha * gaps.sum()
                gap = gaps.detach().mean()

        # Every loss is formed with the critic before its step (CORL's order, as calql.py).
        step(self.actor_optim, actor_loss)
        step(self.critic_optim, critic_loss)
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
