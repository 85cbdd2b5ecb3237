"""Implicit Q-Learning (Kostrikov et al., 2021), readable top to bottom.

Losses, each touching one network so a single backward and one fused Adam step serve all three:
  V:  expectile regression of min(Q_target(s, a)) − V(s) with expectile `iql_tau`;
  Q:  MSE to r + γ(1 − d)·V(s') for both heads of the twin critic;
  π:  advantage-weighted regression, weights exp(β·(Q_target − V)) capped at `exp_adv_max`.
The actor's lr follows a cosine over the offline steps and stays at `lr` online: a torch `LambdaLR`
(`actor_sched`, checkpointed with the agent) stepped after each update, so its epoch is `grad_steps`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.config import AgentConfig
from cfdg.agents.networks import GaussianPolicy, TwinQ, ValueNet, inference
from cfdg.agents.optim import adam, frozen_copy, soft_update, step
from cfdg.config import check


@dataclasses.dataclass(frozen=True)
class IQLConfig(AgentConfig):
    """IQL's keys, CORL's locomotion defaults; AntMaze runs set `iql_tau: 0.9`, `iql_beta: 10` and
    `reward_shift: -1` (configs/antmaze.yaml)."""

    algo: str = "iql"
    iql_tau: float = 0.7  # expectile
    iql_beta: float = 3.0  # inverse temperature of advantage weighting
    exp_adv_max: float = 100.0
    actor_cosine: bool = True  # cosine decay of the actor lr over the offline steps (online: constant)
    # Log-std clamp of the Gaussian policy: −20 is CORL's IQL; PEX (pex/networks/policy.py) uses −5.
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    actor_dropout: float = 0.0  # dropout after each hidden layer of the actor (Adroit: 0.1)

    def __post_init__(self) -> None:
        super().__post_init__()
        w = "agent"
        check(0 < self.iql_tau < 1, f"{w}.iql_tau", f"must be in (0, 1), got {self.iql_tau}")
        check(self.iql_beta >= 0, f"{w}.iql_beta", f"must be >= 0, got {self.iql_beta}")
        check(self.exp_adv_max > 0, f"{w}.exp_adv_max", f"must be > 0, got {self.exp_adv_max}")
        check(self.log_std_min < self.log_std_max, w, "log_std_min must be < log_std_max")
        check(0 <= self.actor_dropout < 1, f"{w}.actor_dropout", f"must be in [0, 1), got {self.actor_dropout}")


def _constant(step: int) -> float:
    """The LambdaLR factor of the groups without a schedule (a plain function: LambdaLR saves no state for it)."""
    return 1.0


def expectile_loss(diff: torch.Tensor, tau: float) -> torch.Tensor:
    """Asymmetric L2: weight tau where diff > 0, 1 − tau where diff < 0."""
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.pow(2)).mean()


class IQL(Agent):
    algo = "iql"
    config_class = IQLConfig
    paradigm = "concat"
    _modules = ("critic", "target_critic", "vf", "actor")
    _optims = ("optim",)
    _schedulers = ("actor_sched",)

    def __init__(self, cfg: IQLConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        super().__init__(cfg, obs_dim, act_dim, max_action, device)
        h = cfg.hidden_dims
        self.critic = TwinQ(obs_dim, act_dim, h).to(device)
        self.target_critic = frozen_copy(self.critic)
        self.vf = ValueNet(obs_dim, h).to(device)
        self.actor = self._new_actor()
        self.optim = self._new_optim()
        self.actor_sched = self._new_sched()

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

    def _new_sched(self) -> LambdaLR:
        """Critic and value lr constant, the actor's (group 2) scaled by `_actor_lr_factor`.

        LambdaLR rather than CosineAnnealingLR: the latter updates its lr recursively, which drifts
        from the closed form in the last bits; base_lr · factor(step) is the exact closed form.
        It reproduces the earlier hand-written lr · 0.5 · (1 + cos) bit for bit (scaling by 0.5 is exact).
        """
        return LambdaLR(self.optim, [_constant, _constant, self._actor_lr_factor])

    def _actor_lr_factor(self, step: int) -> float:
        """Cosine from 1 to 0 over the offline steps; 1 online, without the cosine or an unknown length."""
        c = self.cfg
        if self.phase != "offline" or not c.actor_cosine or self.offline_steps_total <= 0:
            return 1.0
        t = min(step, self.offline_steps_total) / self.offline_steps_total
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def start_online(self) -> None:
        """A fresh schedule for the online phase: the actor's lr goes back to `lr` (the factor is 1 online)."""
        super().start_online()
        self.actor_sched = self._new_sched()

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
            awr_act, awr_adv = self.awr_targets(obs, act, adv, v)
            exp_adv = torch.exp(c.iql_beta * awr_adv.detach()).clamp(max=c.exp_adv_max)
            actor_loss = (exp_adv * -self.actor.log_prob(obs, awr_act).float()).mean()

        step(self.optim, v_loss + q_loss + actor_loss)
        self.actor_sched.step()  # sets the lr of update grad_steps + 1
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

    def awr_targets(
        self, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The actions the actor regresses on and their advantages: IQL weights the batch's own."""
        return act, adv

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        """Sample from the Gaussian while exploring (CORL online IQL), its mean in evaluation."""
        with inference(self.actor):
            mean, log_std = self.actor(self.obs_tensor(obs))
        if mode == "explore":
            mean = mean + log_std.exp() * noise(mean.shape, gen, self.device)
        return mean.clamp(-self.max_action, self.max_action).cpu().numpy()
