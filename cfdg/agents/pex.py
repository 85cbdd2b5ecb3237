"""Policy Expansion (Zhang et al., 2023) on top of IQL, readable top to bottom.

Offline: plain IQL. Online: the offline policy is frozen, a fresh policy is added and trained
with the IQL losses, and each action is picked from the two candidates {a_offline, a_new} by
sampling Categorical(softmax(inv_temperature · Q(s, a_i))). In evaluation PEX's code is
"greedy-ish": the new policy's mean and the argmax candidate each with probability 1 − ε
(ε = `pex_eval_eps`, 0.1), a sample otherwise.

The new policy's update follows PEX's `policy_update` (pex/algorithms/pex.py, the code the
paper ran): advantage-weighted regression on the actions the *expanded* policy picks for the
batch's states (sampled as when exploring), with advantages Q_target(s, a) − V(s) of those
actions, not on the batch's own actions as plain IQL.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cfdg.agents.base import Mode, noise, uniform
from cfdg.agents.iql import IQL, IQLConfig
from cfdg.agents.networks import inference
from cfdg.agents.optim import adam, frozen_copy
from cfdg.config import check


@dataclasses.dataclass(frozen=True)
class PEXConfig(IQLConfig):
    """IQL's keys (PEX trains IQL offline and its new policy with IQL's losses) plus the choice's."""

    algo: str = "pex"
    inv_temperature: float = 10.0
    pex_eval_eps: float = 0.1  # eval: greedy with prob 1 - eps (PEX's epsilon_greedy_sample)

    def __post_init__(self) -> None:
        super().__post_init__()
        w = "agent"
        check(self.inv_temperature >= 0, f"{w}.inv_temperature", f"must be >= 0, got {self.inv_temperature}")
        check(0 <= self.pex_eval_eps <= 1, f"{w}.pex_eval_eps", f"must be in [0, 1], got {self.pex_eval_eps}")


def choice_probs(q: torch.Tensor, inv_temperature: float) -> torch.Tensor:
    """P(choose candidate i) = softmax(inv_temperature · Q)_i over the last dim."""
    return torch.softmax(inv_temperature * q, dim=-1)


def choose(
    q: torch.Tensor, inv_temperature: float, u: torch.Tensor, greedy: torch.Tensor | None = None
) -> torch.Tensor:
    """Index of the chosen candidate, by inverse-CDF sampling with uniforms `u` ([...]).

    Where `greedy` is True the argmax of Q is taken instead. Pure: all randomness comes in `u`.
    """
    cdf = choice_probs(q, inv_temperature).cumsum(-1)
    idx = (cdf < u.unsqueeze(-1)).sum(-1).clamp(max=q.shape[-1] - 1)
    if greedy is not None:
        idx = torch.where(greedy, q.argmax(-1), idx)
    return idx


class PEX(IQL):
    algo = "pex"
    config_class = PEXConfig

    def start_online(self) -> None:
        """Freeze the offline policy and add a freshly initialised one with its own optimiser and schedule."""
        if self.phase == "online":
            return
        self.offline_actor = frozen_copy(self.actor)
        self.actor = self._new_actor()
        self.optim = adam(
            [
                {"params": list(self.critic.parameters())},
                {"params": list(self.vf.parameters())},
                {"params": list(self.actor.parameters())},
            ],
            self.cfg.lr,
            self.device,
            self.cfg.fused_adam,
        )
        self.actor_sched = self._new_sched()  # online: constant lr
        self._modules = (*IQL._modules, "offline_actor")
        self.phase = "online"

    def awr_targets(
        self, obs: torch.Tensor, act: torch.Tensor, adv: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Online: the expanded policy's exploring choices and their advantages (PEX's policy_update)."""
        if self.phase == "offline":
            return act, adv
        with torch.no_grad():
            a_off = self.offline_actor(obs)[0]
            mean, log_std = self.actor(obs)
            a_new = (mean + log_std.exp() * torch.randn_like(mean)).clamp(-self.max_action, self.max_action)
            q = torch.stack([self.critic.min(obs, a_off), self.critic.min(obs, a_new)], dim=-1).float()
            pick_new = choose(q, self.cfg.inv_temperature, torch.rand(q.shape[:-1], device=q.device)) == 1
            chosen = torch.where(pick_new.unsqueeze(-1), a_new, a_off)
            chosen_adv = self.target_critic.min(obs, chosen).float() - v.detach()
        return chosen, chosen_adv

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        if self.phase == "offline":
            return super().act(obs, mode, gen)
        s = self.obs_tensor(obs)
        with inference(self.actor, self.offline_actor):
            a_off = self.offline_actor(s)[0]
            mean, log_std = self.actor(s)
        eps = self.cfg.pex_eval_eps
        explore = mode == "explore"
        sample_new = explore or bool(uniform((), gen) < eps)
        a_new = mean + log_std.exp() * noise(mean.shape, gen, self.device) if sample_new else mean
        candidates = torch.stack([a_off, a_new]).clamp(-self.max_action, self.max_action)
        q = self.critic.min(s.expand(2, -1), candidates)
        u = uniform((), gen).to(self.device)
        greedy = None if explore else (uniform((), gen) >= eps).to(self.device)
        i = choose(q, self.cfg.inv_temperature, u, greedy)
        return candidates[i].cpu().numpy()
