"""The networks the agents share: MLPs, a fused twin-Q critic, a value net and the two policies.

The twin critic is ONE batched network (weights [2, in, out], `baddbmm`), so both Q heads run
in one kernel per layer and one optimiser step; that, fused Adam and the absence of host syncs in
`update` are what make these agents fast on small batches.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Iterable, Iterator

import torch
from torch import nn


def mlp(in_dim: int, hidden: Iterable[int], out_dim: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
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

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Iterable[int], max_action: float, log_std_range, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim, dropout)  # dropout: CORL's IQL actor_dropout (Adroit 0.1)
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


@contextlib.contextmanager
def inference(*modules: nn.Module | None) -> Iterator[None]:
    """Dropout off while acting (CORL acts with actor.eval()); the modules' training mode comes back after."""
    mods = [m for m in modules if m is not None]
    modes = [m.training for m in mods]
    for m in mods:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(mods, modes, strict=True):
            m.train(mode)
