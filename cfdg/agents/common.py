"""What the three agents truly share: MLPs, a fused twin-Q, policies, soft updates, the agent shell.

The twin critic is ONE batched network (weights [2, in, out], `baddbmm`), so both Q heads run
in one kernel per layer and one optimiser step; that, fused Adam and the absence of host syncs in
`update` are what make these agents fast on small batches.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cfdg.agents.config import AgentConfig
from cfdg.device import autocast
from cfdg.errors import CheckpointError

Mode = Literal["explore", "eval"]


def mlp(in_dim: int, hidden: Iterable[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class EnsembleLinear(nn.Module):
    """`n` independent linear layers evaluated as one batched matmul; init as nn.Linear."""

    def __init__(self, n: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(n, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # shared input [B, in] -> [n, B, out]
            return torch.matmul(x, self.weight) + self.bias
        return torch.baddbmm(self.bias, x, self.weight)


class TwinQ(nn.Module):
    """Two Q networks fused into one: forward(obs, act) -> [2, B]."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Iterable[int], n: int = 2) -> None:
        super().__init__()
        dims = [obs_dim + act_dim, *hidden]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in itertools.pairwise(dims))
        self.head = EnsembleLinear(n, dims[-1], 1)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        x = torch.cat([obs, act], dim=-1)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(x).squeeze(-1)

    def min(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self(obs, act).min(dim=0).values


class ValueNet(nn.Module):
    def __init__(self, obs_dim: int, hidden: Iterable[int]) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class GaussianPolicy(nn.Module):
    """tanh-squashed mean, state-independent log-std (as CORL's and PEX's IQL policy)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Iterable[int], max_action: float, log_std_range) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.max_action = max_action
        self.log_std_min, self.log_std_max = log_std_range

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tanh(self.net(obs)) * self.max_action
        log_std = self.log_std.clamp(self.log_std_min, self.log_std_max)
        return mean, log_std

    def log_prob(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        mean, log_std = self(obs)
        z = (act - mean) * torch.exp(-log_std)
        return (-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


class DeterministicPolicy(nn.Module):
    """TD3's actor: tanh(MLP(obs)) · max_action."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Iterable[int], max_action: float) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.max_action = max_action

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs)) * self.max_action


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """target ← target + rate·(source − target), one foreach kernel over all tensors."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), rate)


def frozen_copy(module: nn.Module) -> nn.Module:
    out = copy.deepcopy(module)
    out.requires_grad_(False)
    return out


def adam(params: Any, lr: float, device: torch.device, fused: bool) -> torch.optim.Adam:
    """Fused Adam where this torch supports it on `device`, foreach otherwise."""
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError):
            pass
    return torch.optim.Adam(params, lr=lr, foreach=True)


def noise(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Standard normal noise from a CPU generator: identical streams on every device."""
    return torch.randn(shape, generator=gen).to(device)


def uniform(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.rand(shape, generator=gen)


class Agent:
    """Shell shared by IQL, PEX and APL: device, observation normaliser, state (de)serialisation.

    Subclasses list their modules in `_modules` and optimisers in `_optims`, and implement
    `update(batch) -> dict[str, Tensor]` (metrics stay on the device: no host sync) and
    `act(obs, mode, gen) -> np.ndarray`.
    """

    algo = "base"
    _modules: tuple[str, ...] = ()
    _optims: tuple[str, ...] = ()

    def __init__(self, cfg: AgentConfig, obs_dim: int, act_dim: int, max_action: float, device: torch.device) -> None:
        self.cfg, self.obs_dim, self.act_dim = cfg, obs_dim, act_dim
        self.max_action, self.device = float(max_action), device
        self.obs_mean = torch.zeros(obs_dim, device=device)
        self.obs_std = torch.ones(obs_dim, device=device)
        self.phase = "offline"
        self.grad_steps = 0
        self.offline_steps_total = 0  # length of the actor's cosine schedule

    # --- data ------------------------------------------------------------------------------
    def set_obs_stats(self, observations: np.ndarray) -> None:
        """Standardise with offline-data statistics (CORL/TD3+BC); identity when disabled."""
        if self.cfg.normalize_obs:
            self.obs_mean = torch.as_tensor(observations.mean(0), dtype=torch.float32, device=self.device)
            self.obs_std = torch.as_tensor(observations.std(0) + 1e-3, dtype=torch.float32, device=self.device)

    def norm(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def reward(self, r: torch.Tensor) -> torch.Tensor:
        return r * self.cfg.reward_scale + self.cfg.reward_shift

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return self.norm(torch.as_tensor(obs, dtype=torch.float32).to(self.device))

    def autocast(self):
        return autocast(self.device, self.cfg.precision)

    def random_action(self, gen: torch.Generator) -> np.ndarray:
        return ((uniform((self.act_dim,), gen) * 2 - 1) * self.max_action).numpy()

    # --- phases ----------------------------------------------------------------------------
    def start_online(self) -> None:
        """Switch from offline pretraining to online fine-tuning (PEX expands its policy here)."""
        self.phase = "online"

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).state_dict() for name in self._modules + self._optims}
        state.update(
            obs_mean=self.obs_mean.cpu(),
            obs_std=self.obs_std.cpu(),
            phase=self.phase,
            grad_steps=self.grad_steps,
            offline_steps_total=self.offline_steps_total,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["phase"] == "online" and self.phase != "online":
            self.start_online()  # builds the online-only parts (PEX) before weights are loaded
        for name in self._modules + self._optims:
            if name not in state:
                raise CheckpointError(f"checkpoint has no '{name}' for a {self.algo} agent")
            try:
                getattr(self, name).load_state_dict(state[name])
            except (RuntimeError, ValueError, KeyError) as e:
                raise CheckpointError(f"checkpoint '{name}' does not fit this {self.algo} agent: {e}") from e
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self.phase = state["phase"]
        self.grad_steps = int(state["grad_steps"])
        self.offline_steps_total = int(state["offline_steps_total"])
