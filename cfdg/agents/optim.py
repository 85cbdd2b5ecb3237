"""Optimisers and target networks: fused Adam, one optimiser step, frozen copies and their Polyak (soft) update."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, rate: float) -> None:
    """target ← target + rate·(source − target), one foreach kernel over all tensors."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), rate)


def step(optim: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`: zero the grads, backpropagate into this optimiser's parameters
    only, step. Only its own parameters: a loss that passes through another network (an actor's
    loss through the critic) leaves that network's gradients alone, as CORL's `backward(inputs=...)`."""
    optim.zero_grad(set_to_none=True)
    loss.backward(inputs=[p for group in optim.param_groups for p in group["params"]])
    optim.step()


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
