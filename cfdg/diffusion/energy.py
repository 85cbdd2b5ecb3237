"""EDIS's energy functions (Liu et al. 2024): what they see, how they learn, how they steer a sampler.

Each energy E(x_σ, σ) scores a noisy transition vector (the model's normalised space) at noise
level σ; low energy = looks like the online data. It is trained by contrastive energy prediction
(Lu et al. 2023, EDIS's trainer.py): for every positive (an online row) and its K negatives (rows
of the diffusion model), all noised to one σ, minimise −log softmax(−E)[positive] over the K+1.
Then exp(−E) is the density ratio online / model at that noise level, and −∇E is the direction
that turns the model's samples into online-like ones. Three energies, each steering its own part
of the row: `state` (the online state distribution), `policy` (the current policy's action for
the state) and `transition` (the environment's next state for the state and action).

Guidance (EDIS's elucidated_diffusion.py): the sampler's derivative (x − D)/σ gets + Σ_k w_k·∇E_k
on part k, each row's guidance norm clipped to 10·√dims. In the denoiser form the samplers use
that is D' = D − σ·g.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn
from torch.nn import functional as F

from cfdg.diffusion.normaliser import vector_dim

NORM_CLIP = 10.0  # EDIS: guidance norm at most 10·sqrt(dims) per row


def energy_part(name: str, obs_dim: int, act_dim: int) -> slice:
    """The columns of a transition vector (s, a, r, s', terminal) an energy's gradient steers."""
    parts = {
        "state": slice(0, obs_dim),
        "policy": slice(obs_dim, obs_dim + act_dim),
        "transition": slice(obs_dim + act_dim + 1, 2 * obs_dim + act_dim + 1),
    }
    return parts[name]


class EnergyNet(nn.Module):
    """E(x, σ): an MLP on the whole noisy row and c_noise = log(σ)/4 (EDM's noise input).

    EDIS feeds the sampler's step index instead; σ keeps the energy valid for any number of
    sampler steps (`sampling.steps` is materialise's choice, made after the fit).
    """

    def __init__(self, d_data: int, hidden: int, layers: int) -> None:
        super().__init__()
        dims = [d_data + 1, *([hidden] * layers)]
        blocks: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(dims[-1], 1))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """[B] energies of rows `x` [B, d] at noise levels `sigma` [B, 1]."""
        c_noise = sigma.log() / 4
        return self.net(torch.cat([x, c_noise.expand(len(x), 1)], dim=1)).squeeze(1)


class EnergySet(nn.Module):
    """The named energies of one EDIS model (a subset of state, policy, transition)."""

    def __init__(self, names: tuple[str, ...], obs_dim: int, act_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        d = vector_dim(obs_dim, act_dim)
        self.nets = nn.ModuleDict({name: EnergyNet(d, hidden, layers) for name in names})


def contrastive_loss(
    energy: EnergyNet, positives: torch.Tensor, negatives: torch.Tensor, sigma: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, accuracy): −log softmax(−E)[positive] over each positive [B, d] and its negatives [B, K, d].

    Positive and negatives share one noise level σ [B, 1] and get independent noise. Accuracy is
    the share of groups whose positive has the lowest energy (chance: 1/(K+1)).
    """
    b, k, d = negatives.shape
    clean = torch.cat([positives[:, None], negatives], dim=1)  # [B, K+1, d], positive first
    noise = torch.randn(clean.shape, generator=gen).to(clean.device)  # CPU draws: same on every device
    noisy = clean + noise * sigma[:, None, :]
    levels = sigma.repeat_interleave(k + 1, dim=0)
    logits = -energy(noisy.reshape(-1, d), levels).reshape(b, k + 1)
    target = torch.zeros(b, dtype=torch.long, device=clean.device)
    return F.cross_entropy(logits, target), (logits.argmax(1) == 0).float().mean()


def energy_guidance(
    energies: EnergySet, scales: dict[str, float], x: torch.Tensor, sigma: torch.Tensor, norm_clip: bool
) -> torch.Tensor:
    """g = Σ_k scale_k·∇E_k(x, σ) on part k, each row's norm clipped to 10·√dims (EDIS).

    Works inside torch.inference_mode: the gradient is taken on a plain copy of x.
    """
    with torch.inference_mode(False), torch.enable_grad():
        xg = x.detach().clone().float().requires_grad_(True)
        level = sigma.detach().clone().float().reshape(1, 1)
        g = torch.zeros_like(xg)
        for name, net in energies.nets.items():
            scale = scales.get(name, 0.0)
            if scale == 0:
                continue
            (grad,) = torch.autograd.grad(net(xg, level).sum(), xg)
            part = energy_part(name, energies.obs_dim, energies.act_dim)
            g[:, part] += scale * grad[:, part]
    if norm_clip:
        target = NORM_CLIP * math.sqrt(g.shape[1])
        norm = g.norm(dim=1, keepdim=True)
        g = g * torch.clamp(target / norm.clamp_min(1e-12), max=1.0)
    return g.detach()
