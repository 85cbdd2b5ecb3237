"""Calibrated Q-Learning (Nakamoto et al., 2023), readable top to bottom.

Cal-QL is CQL whose conservative term cannot push Q below a reference policy's value: on the
policy's actions the learnt Q is replaced by max(Q, Q_ref) inside the log-sum-exp, with Q_ref the
Monte-Carlo discounted return-to-go of the dataset episode the state came from. Following CORL's
single-file implementation (algorithms/finetune/cal_ql.py), whose defaults these are:
  π:  SAC with a tanh-Gaussian policy, L_π = α·log π(ã|s) − min Q(s, ã), α tuned to −|A| entropy;
  Q:  MSE to r + γ(1 − d)·min Q_target(s', a') for both heads, a' ~ π(s') (or the max over
      `cql_n_actions` samples with `cql_max_target_backup`), plus the CQL term
      cql_alpha · (logsumexp over {random, π(s), π(s')} actions of Q − Q(s, a)) with importance
      weights (−log density), `cql_temp`, optional clipping and the Lagrange form;
  calibration: max(Q(s, a~π), mc_return(s)) on the π(s) and π(s') actions, offline only. Online,
      as CORL does, calibration is switched off (online rows have no return-to-go yet) and
      `cql_alpha_online` replaces `cql_alpha`.
MC returns (`mc_returns` below) are computed when the agent loads the offline store, from its
rewards after the agent's reward transform and with its discount (CORL computes them after its
reward modification too), so the store contract does not change and one store serves any
discount. Sparse rewards (AntMaze, `calql_sparse_mc`): an episode that ends on the failure reward
(the transformed 0) gets r/(1 − γ) on every step, CORL's special case for never-reached goals.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from cfdg.agents.base import Agent, Mode, noise
from cfdg.agents.config import AgentConfig
from cfdg.agents.networks import TwinQ, mlp
from cfdg.agents.optim import adam, frozen_copy, soft_update, step
from cfdg.config import check
from cfdg.store import Transitions

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


# --- configs -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CQLConfig(AgentConfig):
    """The keys of CQL's conservative term and its SAC policy: Cal-QL's, and APL's `cql` engine's
    (which reads these and no other `cql_*` key). CORL cal_ql.py TrainConfig defaults."""

    cql_alpha: float = 10.0  # weight of the conservative term (Cal-QL: offline; APL: λ = 1 batches)
    cql_n_actions: int = 10  # sampled actions per state in the log-sum-exp
    cql_temp: float = 1.0
    cql_importance_sample: bool = True
    cql_policy_lr: float = 3e-5  # actor and SAC temperature lr (critics use `lr`)

    def __post_init__(self) -> None:
        super().__post_init__()
        w = "agent"
        check(self.cql_alpha >= 0, f"{w}.cql_alpha", f"must be >= 0, got {self.cql_alpha}")
        check(self.cql_n_actions >= 1, f"{w}.cql_n_actions", f"must be >= 1, got {self.cql_n_actions}")
        check(self.cql_temp > 0, f"{w}.cql_temp", f"must be > 0, got {self.cql_temp}")
        check(self.cql_policy_lr > 0, f"{w}.cql_policy_lr", f"must be > 0, got {self.cql_policy_lr}")


@dataclasses.dataclass(frozen=True)
class CalQLConfig(CQLConfig):
    """Cal-QL's keys: the conservative term's plus CORL's further CQL options and the calibration's."""

    algo: str = "calql"
    cql_alpha_online: float = 10.0  # cql_alpha while fine-tuning
    cql_lagrange: bool = False  # tune the conservative weight towards cql_target_action_gap
    cql_target_action_gap: float = -1.0
    cql_max_target_backup: bool = False  # TD target: max over cql_n_actions sampled next actions
    cql_clip_diff_min: float | None = None  # clip of the CQL gap; None: no clip (CORL: -inf)
    cql_clip_diff_max: float | None = None
    cql_auto_alpha: bool = True  # tune SAC's temperature to entropy -|A|
    cql_alpha_multiplier: float = 1.0
    cql_backup_entropy: bool = False
    cql_bc_steps: int = 0  # first gradient steps clone the data's actions
    cql_orthogonal_init: bool = True
    cql_actor_layers: int = 3  # hidden layers of width hidden_dims[0] (CORL: 3 x 256)
    cql_q_layers: int = 2  # CORL q_n_hidden_layers (AntMaze 5, Adroit 3)
    calql_sparse_mc: bool = False  # CORL is_sparse_reward: failed episodes get r/(1-γ) (AntMaze)

    def __post_init__(self) -> None:
        super().__post_init__()
        w = "agent"
        check(self.cql_alpha_online >= 0, f"{w}.cql_alpha_online", f"must be >= 0, got {self.cql_alpha_online}")
        check(self.cql_bc_steps >= 0, f"{w}.cql_bc_steps", f"must be >= 0, got {self.cql_bc_steps}")
        check(self.cql_actor_layers >= 1, f"{w}.cql_actor_layers", f"must be >= 1, got {self.cql_actor_layers}")
        check(self.cql_q_layers >= 1, f"{w}.cql_q_layers", f"must be >= 1, got {self.cql_q_layers}")
        lo, hi = self.cql_clip_diff_min, self.cql_clip_diff_max
        check(lo is None or hi is None or lo < hi, f"{w}.cql_clip_diff_min", "must be < cql_clip_diff_max")


# --- Monte-Carlo returns ------------------------------------------------------------------------


def episode_ends(data: Transitions) -> np.ndarray:
    """Rows that end an episode: terminal, timeout, last row, or s' that is not the next row's s."""
    ends = data.terminals | data.timeouts
    if len(data) > 1:
        ends[:-1] |= np.linalg.norm(data.observations[1:] - data.next_observations[:-1], axis=1) > 1e-6
    if len(data):
        ends[-1] = True
    return ends


def mc_returns(
    rewards: np.ndarray, terminals: np.ndarray, ends: np.ndarray, discount: float, sparse_fail: float | None = None
) -> np.ndarray:
    """Discounted return-to-go per row within its episode (CORL's get_return_to_go).

    `rewards` are the rewards the critic learns (already transformed). With `sparse_fail`, an
    episode whose last reward equals it never reached the goal: every row gets r/(1 − γ).
    """
    out = np.zeros(len(rewards), np.float64)
    start = 0
    for end in np.flatnonzero(ends):
        r = rewards[start : end + 1].astype(np.float64)
        if sparse_fail is not None and r[-1] == sparse_fail:
            out[start : end + 1] = r[-1] / (1.0 - discount)
        else:
            g = 0.0
            for i in range(len(r) - 1, -1, -1):
                g = r[i] + discount * g * (1.0 - float(terminals[start + i]))
                out[start + i] = g
        start = end + 1
    return out.astype(np.float32)


# --- networks ------------------------------------------------------------------------------------


def orthogonal_init_(module: nn.Module) -> None:
    """CORL's init: orthogonal weights with gain √2, zero biases (every layer, the heads included)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():  # TwinQ's ensemble layers: weight [n, in, out]
        if p.dim() == 3 and name.endswith("weight"):
            with torch.no_grad():
                for w in p:
                    nn.init.orthogonal_(w.T, gain=math.sqrt(2))
        elif p.dim() == 3 and name.endswith("bias"):
            nn.init.zeros_(p)


class TanhGaussianPolicy(nn.Module):
    """SAC's policy: an MLP gives mean and raw log-std, log_std = clamp(m·raw + b) and a = tanh(u).

    CORL learns the affine m, b (init 1, −1); rlkit's policy, which APL0's CQL runs, has none
    (`affine_log_std=False`: log_std = clamp(raw)) and clamps to [−5, 2] (`log_std_range`).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: tuple[int, ...],
        max_action: float,
        log_std_range: tuple[float, float] = (LOG_STD_MIN, LOG_STD_MAX),
        affine_log_std: bool = True,
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, 2 * act_dim)
        if affine_log_std:
            self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
            self.log_std_offset = nn.Parameter(torch.tensor(-1.0))
        self.affine_log_std = affine_log_std
        self.log_std_min, self.log_std_max = log_std_range
        self.act_dim, self.max_action = act_dim, max_action

    def dist(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(obs).split(self.act_dim, dim=-1)
        if self.affine_log_std:
            raw = self.log_std_multiplier * raw + self.log_std_offset
        return mean, raw.clamp(self.log_std_min, self.log_std_max)

    def forward(self, obs: torch.Tensor, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log π(action|s)); eps None gives the deterministic tanh(mean)."""
        mean, log_std = self.dist(obs)
        if eps is None:
            return torch.tanh(mean) * self.max_action, torch.zeros(mean.shape[:-1], device=mean.device)
        u = mean + log_std.exp() * eps  # reparameterised pre-tanh sample
        normal = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        squash = 2.0 * (math.log(2.0) - u - functional.softplus(-2.0 * u))  # log |d tanh(u)/du|
        return torch.tanh(u) * self.max_action, (normal - squash).sum(-1)


def sample_actions(
    actor: TanhGaussianPolicy, obs: torch.Tensor, n: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """π's reparameterised actions and log-probs at `obs`: [B, A], or `n` per state as [B, n, A]."""
    if n is not None:
        obs = obs.unsqueeze(1).expand(-1, n, -1)
    return actor(obs, torch.randn((*obs.shape[:-1], actor.act_dim), device=obs.device))


def q_many(critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Q of [B, N, A] actions at [B, D] states: [heads, B, N]."""
    b, n, _ = act.shape
    q = critic(obs.unsqueeze(1).expand(-1, n, -1).reshape(b * n, -1), act.reshape(b * n, -1))
    return q.view(q.shape[0], b, n)


# --- the CQL term ----------------------------------------------------------------------------------


def cql_gap(
    q_data: torch.Tensor,
    q_rand: torch.Tensor,
    q_curr: torch.Tensor,
    q_next: torch.Tensor,
    logp_curr: torch.Tensor,
    logp_next: torch.Tensor,
    lower_bound: torch.Tensor | None,
    act_dim: int,
    temp: float = 1.0,
    importance_sample: bool = True,
) -> torch.Tensor:
    """Per-head mean of logsumexp over sampled actions of Q − Q(s, a): [heads].

    q_data [h, B]; q_rand/q_curr/q_next [h, B, N]; logp_* [B, N]; lower_bound [B] or None.
    The calibration is the one line that makes CQL Cal-QL: max(Q, lower_bound) on π's actions.
    """
    if lower_bound is not None:
        q_curr = torch.maximum(q_curr, lower_bound[:, None])
        q_next = torch.maximum(q_next, lower_bound[:, None])
    if importance_sample:
        random_density = act_dim * math.log(0.5)  # uniform on [-1, 1]^A
        cat = torch.cat([q_rand - random_density, q_next - logp_next, q_curr - logp_curr], dim=-1)
    else:
        cat = torch.cat([q_rand, q_data.unsqueeze(-1), q_next, q_curr], dim=-1)
    ood = torch.logsumexp(cat / temp, dim=-1) * temp
    return ood - q_data  # [h, B]; the caller clips and averages


def conservative_gap(
    actor: TanhGaussianPolicy,
    critic: nn.Module,
    obs: torch.Tensor,
    next_obs: torch.Tensor,
    q_data: torch.Tensor,
    cfg: CQLConfig,
    lower_bound: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`cql_gap` on `cfg.cql_n_actions` random, π(s) and π(s') actions per state, all evaluated at s:
    ([heads, B], Q at the π(s) actions [heads, B, N]). Cal-QL's and APL's CQL engine's one CQL term."""
    n, act_dim = cfg.cql_n_actions, actor.act_dim
    with torch.no_grad():
        a_rand = torch.rand((obs.shape[0], n, act_dim), device=obs.device) * 2 - 1
        a_curr, logp_curr = sample_actions(actor, obs, n)
        a_next, logp_next = sample_actions(actor, next_obs, n)
    q_ood = q_many(critic, obs, torch.cat([a_rand, a_curr, a_next], dim=1)).float()
    q_rand, q_curr, q_next = q_ood.split(n, dim=-1)
    args = (logp_curr, logp_next, lower_bound, act_dim, cfg.cql_temp, cfg.cql_importance_sample)
    return cql_gap(q_data, q_rand, q_curr, q_next, *args), q_curr


class CalQL(Agent):
    algo = "calql"
    config_class = CalQLConfig
    paradigm = "concat"
    needs_mc_returns = True  # offline batches carry the return-to-go calibration needs
    _modules = ("actor", "critic", "target_critic", "log_alpha", "log_alpha_prime")
    _optims = ("actor_optim", "critic_optim", "alpha_optim", "alpha_prime_optim")

    def __init__(self, cfg: CalQLConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        super().__init__(cfg, obs_dim, act_dim, max_action, device)
        width = cfg.hidden_dims[0]
        self.actor = TanhGaussianPolicy(obs_dim, act_dim, (width,) * cfg.cql_actor_layers, self.max_action)
        self.critic = TwinQ(obs_dim, act_dim, (width,) * cfg.cql_q_layers)
        if cfg.cql_orthogonal_init:
            orthogonal_init_(self.actor.net)
            orthogonal_init_(self.critic)
        self.actor.to(device)
        self.critic.to(device)
        self.target_critic = frozen_copy(self.critic)
        self.log_alpha = nn.ParameterDict({"value": nn.Parameter(torch.zeros((), device=device))})
        self.log_alpha_prime = nn.ParameterDict({"value": nn.Parameter(torch.ones((), device=device))})
        fused = cfg.fused_adam
        self.actor_optim = adam(self.actor.parameters(), cfg.cql_policy_lr, device, fused)
        self.critic_optim = adam(self.critic.parameters(), cfg.lr, device, fused)
        self.alpha_optim = adam(self.log_alpha.parameters(), cfg.cql_policy_lr, device, fused)
        self.alpha_prime_optim = adam(self.log_alpha_prime.parameters(), cfg.lr, device, fused)
        self.target_entropy = -float(act_dim)

    # --- data --------------------------------------------------------------------------------
    def offline_mc_returns(self, data: Transitions) -> np.ndarray:
        """Q_ref for every offline row, on the rewards and discount this agent learns with."""
        c = self.cfg
        rewards = data.rewards.astype(np.float64) * c.reward_scale + c.reward_shift
        sparse_fail = c.reward_shift if c.calql_sparse_mc else None  # the transformed reward 0
        return mc_returns(rewards, data.terminals, episode_ends(data), c.discount, sparse_fail)

    @property
    def calibrated(self) -> bool:
        """CORL calibrates offline only (switch_calibration at the start of fine-tuning)."""
        return self.phase == "offline"

    # --- one gradient step -------------------------------------------------------------------------
    def update(self, batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        obs, next_obs = self.norm(batch.observations), self.norm(batch.next_observations)
        act, done = batch.actions, batch.dones
        rew = self.reward(batch.rewards)
        bound = None
        if self.calibrated:
            bound = getattr(batch, "mc_returns", None)
            if bound is None:
                raise ValueError("Cal-QL's offline batches need mc_returns (see offline_mc_returns)")
        n = c.cql_n_actions

        with self.autocast():
            # Policy and temperature (SAC).
            pi, logp = sample_actions(self.actor, obs)
            log_alpha = self.log_alpha["value"]
            alpha_loss = -(log_alpha * (logp + self.target_entropy).detach()).mean()
            alpha = (log_alpha.exp() * c.cql_alpha_multiplier).detach() if c.cql_auto_alpha else c.cql_alpha_multiplier
            alpha = torch.as_tensor(alpha, device=self.device)
            if self.grad_steps < c.cql_bc_steps:
                actor_loss = (alpha * logp - self._log_prob(obs, act)).mean()
            else:
                actor_loss = (alpha * logp - self.critic.min(obs, pi).float()).mean()

            # TD target.
            with torch.no_grad():
                if c.cql_max_target_backup:
                    a2, logp2 = sample_actions(self.actor, next_obs, n)
                    q2 = q_many(self.target_critic, next_obs, a2).min(0).values
                    target, idx = q2.max(-1)
                    logp2 = logp2.gather(-1, idx.unsqueeze(-1)).squeeze(-1)
                else:
                    a2, logp2 = sample_actions(self.actor, next_obs)
                    target = self.target_critic.min(next_obs, a2)
                if c.cql_backup_entropy:
                    target = target - alpha * logp2
                q_target = rew + (1.0 - done) * c.discount * target.float()
            qs = self.critic(obs, act).float()
            td_loss = (qs - q_target).pow(2).mean(dim=1)  # [heads]

            # CQL term on random, π(s) and π(s') actions, all evaluated at s.
            gap, q_curr = conservative_gap(self.actor, self.critic, obs, next_obs, qs, c, bound)
            lo = -math.inf if c.cql_clip_diff_min is None else c.cql_clip_diff_min
            hi = math.inf if c.cql_clip_diff_max is None else c.cql_clip_diff_max
            gap = gap.clamp(lo, hi).mean(dim=1)  # [heads]
            weight = c.cql_alpha if self.phase == "offline" else c.cql_alpha_online
            if c.cql_lagrange:
                alpha_prime = self.log_alpha_prime["value"].exp().clamp(0.0, 1e6)
                cql_loss = alpha_prime.detach() * weight * (gap - c.cql_target_action_gap)
                alpha_prime_loss = -(alpha_prime * weight * (gap.detach() - c.cql_target_action_gap)).mean()
            else:
                cql_loss = weight * gap
                alpha_prime_loss = torch.zeros((), device=self.device)
            critic_loss = (td_loss + cql_loss).sum()

        # CORL's order: temperature, actor, (Lagrange multiplier), critic; every loss was formed above.
        if c.cql_auto_alpha:
            step(self.alpha_optim, alpha_loss)
        step(self.actor_optim, actor_loss)
        if c.cql_lagrange:
            step(self.alpha_prime_optim, alpha_prime_loss)
        step(self.critic_optim, critic_loss)
        soft_update(self.target_critic, self.critic, c.target_rate)
        self.grad_steps += 1
        below = (
            (q_curr < bound[None, :, None]).float().mean() if bound is not None else torch.zeros((), device=self.device)
        )
        return {
            "q_loss": td_loss.detach().mean(),
            "cql_gap": gap.detach().mean(),
            "actor_loss": actor_loss.detach(),
            "alpha": alpha.detach().float(),
            "q_mean": qs.detach().mean(),
            "bound_rate": below.detach(),
        }

    def _log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """log π(a|s) of dataset actions (behaviour cloning warm-up, `cql_bc_steps`)."""
        mean, log_std = self.actor.dist(obs)
        a = (act / self.max_action).clamp(-1 + 1e-6, 1 - 1e-6)
        u = torch.atanh(a)
        eps = (u - mean) * torch.exp(-log_std)
        normal = -0.5 * eps.pow(2) - log_std - 0.5 * math.log(2 * math.pi)
        return (normal - 2.0 * (math.log(2.0) - u - functional.softplus(-2.0 * u))).sum(-1)

    # --- acting ------------------------------------------------------------------------------------
    def start_online(self) -> None:
        """Fine-tuning: calibration off and `cql_alpha_online` (CORL's switch at the offline/online border)."""
        self.phase = "online"

    @torch.no_grad()
    def act(self, obs: np.ndarray, mode: Mode, gen: torch.Generator) -> np.ndarray:
        """A sample of π while exploring (CORL fine-tuning acts stochastically), tanh(mean) in evaluation."""
        s = self.obs_tensor(obs)
        eps = noise((self.act_dim,), gen, self.device) if mode == "explore" else None
        a, _ = self.actor(s, eps)
        return a.clamp(-self.max_action, self.max_action).cpu().numpy()
