"""EDM (Karras et al. 2022): preconditioning, training loss and the samplers, with guidance.

Samplers: EDM's Heun (Algorithm 2, stochastic or deterministic) and DPM-Solver++(2M)
(Lu et al. 2022), a 2nd-order multistep solver of the same probability-flow ODE that needs one
network call per step instead of Heun's two. `SOLVERS` is the table `sampling.solver` names; each
entry takes every design axis as an argument (as EDM's ablation sampler does), so an experiment
chooses a solver and its axes by passing them, not by replacing code.

All formulas are in denoiser form: D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise). Classifier-free
guidance in that form is D = (1+w)·D(x, c) − w·D(x, ∅), which equals the paper's
ε = (1+w)·ε(x, c) − w·ε(x, ∅) because ε = (x − D)/σ is affine in D.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from cfdg.diffusion.denoiser import LABEL_NULL


def preconditioning(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, ...]:
    """(c_skip, c_out, c_in, c_noise) of EDM Table 1."""
    s2 = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / s2
    c_out = sigma * sigma_data / s2.sqrt()
    c_in = 1 / s2.sqrt()
    c_noise = sigma.log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """λ(σ) = (σ² + σd²) / (σ·σd)²: unit effective loss weight at every noise level."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def denoise(
    net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor, sigma_data: float
) -> torch.Tensor:
    """D(x; σ, label). `sigma` is [B, 1] (training) or [1, 1] (one level for the batch, sampling)."""
    c_skip, c_out, c_in, c_noise = preconditioning(sigma, sigma_data)
    f = net(c_in * x, c_noise.reshape(-1), labels)
    return c_skip * x + c_out * f.float()


def guided_denoise(
    net: nn.Module, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor, w: float, sigma_data: float
) -> torch.Tensor:
    """(1+w)·D(x,c) − w·D(x,∅) with both evaluations in ONE network call of 2B rows.

    With w = 0 only the conditional half is needed, so it is the only one computed.
    """
    if w == 0:
        return denoise(net, x, sigma, labels, sigma_data)
    null = torch.full_like(labels, LABEL_NULL)
    both = denoise(net, torch.cat([x, x]), sigma, torch.cat([labels, null]), sigma_data)
    cond, uncond = both.chunk(2)
    return cond + w * (cond - uncond)


def edm_loss(
    net: nn.Module,
    y: torch.Tensor,
    labels: torch.Tensor,
    sigma_data: float,
    p_mean: float,
    p_std: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """λ(σ)·‖D(y + n; σ) − y‖² averaged, σ log-normal(P_mean, P_std), n ~ N(0, σ²)."""
    b = y.shape[0]
    sigma = (torch.randn(b, 1, generator=generator, device=y.device) * p_std + p_mean).exp()
    noise = torch.randn(y.shape, generator=generator, device=y.device) * sigma
    d = denoise(net, y + noise, sigma, labels, sigma_data)
    return (loss_weight(sigma, sigma_data) * (d - y) ** 2).mean()


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float) -> list[float]:
    """σ_0 > … > σ_{N-1} = σ_min, then σ_N = 0 (EDM eq. 5), as Python floats (float64 maths)."""
    if steps == 1:
        return [sigma_max, 0.0]
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return [(a + i / (steps - 1) * (b - a)) ** rho for i in range(steps)] + [0.0]


def heun_sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float,
    stochastic: bool = True,
    s_churn: float = 80.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.003,
) -> torch.Tensor:
    """EDM Algorithm 2: Heun 2nd order with churn γ = min(S_churn/N, √2−1) for σ in [S_tmin, S_tmax].

    `denoiser(x, sigma[1,1])` returns D. Noise comes from `generator` (CPU) and is moved to
    `device`, so a seed gives the same samples whatever the device's own RNG does.
    Deterministic mode (stochastic=False) is the same loop with γ = 0: 2N−1 network calls.
    """

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator).to(device)

    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
    gamma_max = min(s_churn / steps, math.sqrt(2) - 1) if stochastic else 0.0
    x = randn() * sigmas[0]
    for i in range(steps):
        t_cur, t_next = sigmas[i], sigmas[i + 1]
        gamma = gamma_max if s_tmin <= t_cur <= s_tmax else 0.0
        t_hat = t_cur * (1 + gamma)
        if gamma > 0:
            x = x + math.sqrt(t_hat**2 - t_cur**2) * s_noise * randn()
        d = (x - denoiser(x, _level(t_hat, device))) / t_hat
        x_next = x + (t_next - t_hat) * d
        if t_next > 0:
            d_next = (x_next - denoiser(x_next, _level(t_next, device))) / t_next
            x_next = x + (t_next - t_hat) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return x


def dpmpp2m_sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float,
) -> torch.Tensor:
    """DPM-Solver++(2M) in data-prediction form on EDM's Karras σ schedule: `steps` network calls.

    EDM's x = y + σ·n is the VE case (α = 1) with log-SNR λ = −log σ. One step from σ_i to
    σ_{i+1} with h = λ_{i+1} − λ_i is x ← (σ_{i+1}/σ_i)·x + (1 − e^{−h})·D̂, where D̂ is the
    denoiser output extrapolated linearly in λ from this and the previous call,
    D̂ = (1 + 1/2r)·D_i − (1/2r)·D_{i−1}, r = h_{i−1}/h_i (first step and last step to σ = 0:
    D̂ = D_i, first order). `denoiser(x, sigma[1,1])` returns D, guided or not, as in heun_sample.
    Deterministic: noise is drawn once, for x at σ_max.
    """
    sigmas = karras_sigmas(steps, sigma_min, sigma_max, rho)
    x = torch.randn(shape, generator=generator).to(device) * sigmas[0]
    prev: torch.Tensor | None = None
    h_prev = 0.0
    for i in range(steps):
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        d = denoiser(x, _level(s_cur, device))
        if s_next == 0:
            x = d  # the limit σ_{i+1} → 0 of the update: the data prediction itself
            break
        h = math.log(s_cur / s_next)
        d_hat = d
        if prev is not None:
            r = h_prev / h
            d_hat = (1 + 1 / (2 * r)) * d - (1 / (2 * r)) * prev
        x = (s_next / s_cur) * x + (-math.expm1(-h)) * d_hat
        prev, h_prev = d, h
    return x


def _dpmpp2m(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    steps: int,
    sigma_min: float,
    sigma_max: float,
    rho: float,
    stochastic: bool = True,
    s_churn: float = 80.0,
    s_tmin: float = 0.05,
    s_tmax: float = 50.0,
    s_noise: float = 1.003,
) -> torch.Tensor:
    """dpmpp2m_sample in the table's signature: a deterministic solver, so the churn axes do not apply."""
    return dpmpp2m_sample(denoiser, shape, generator, device, steps, sigma_min, sigma_max, rho)


class Solver(Protocol):
    """A sampler of the table: denoiser, shape, noise generator and device, the Karras schedule
    (steps, σ_min, σ_max, ρ) and the stochastic sampler's axes (ignored by a deterministic solver)."""

    def __call__(
        self,
        denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        shape: tuple[int, int],
        generator: torch.Generator,
        device: torch.device,
        steps: int,
        sigma_min: float,
        sigma_max: float,
        rho: float,
        stochastic: bool = ...,
        s_churn: float = ...,
        s_tmin: float = ...,
        s_tmax: float = ...,
        s_noise: float = ...,
    ) -> torch.Tensor: ...


# `sampling.solver` → sampler; cfdg.diffusion.config.SOLVERS holds the same names for validation.
SOLVERS: dict[str, Solver] = {"heun": heun_sample, "dpmpp2m": _dpmpp2m}


def _level(sigma: float, device: torch.device) -> torch.Tensor:
    return torch.full((1, 1), sigma, dtype=torch.float32, device=device)
