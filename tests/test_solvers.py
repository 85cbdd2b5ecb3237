"""The samplers against a case with a known answer: Gaussian data, whose EDM denoiser is exact.

Data y ~ N(μ, s²) per dimension has D(x; σ) = μ + s²/(s² + σ²)·(x − μ), and the probability-flow
ODE carries x(σ_max) to μ + (x(σ_max) − μ)·s/√(s² + σ_max²) at σ = 0. A correct solver converges
to that point as its steps grow, at its order's rate, and to the Heun solution of the same ODE.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from cfdg.diffusion.denoiser import LABEL_NULL, Denoiser
from cfdg.diffusion.edm import dpmpp2m_sample, guided_denoise, heun_sample

MU, S = 0.7, 0.5
SIGMA_MIN, SIGMA_MAX, RHO = 0.002, 80.0, 7.0
SHAPE = (2000, 3)
CPU = torch.device("cpu")


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return MU + S**2 / (S**2 + sigma.item() ** 2) * (x - MU)


def exact(seed: int) -> torch.Tensor:
    """The ODE's end point from the x(σ_max) that the samplers draw first from `seed`."""
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)) * SIGMA_MAX
    return MU + (x_T - MU) * S / math.sqrt(S**2 + SIGMA_MAX**2)


def dpm(steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return dpmpp2m_sample(gaussian_denoiser, SHAPE, gen, CPU, steps, SIGMA_MIN, SIGMA_MAX, RHO)


def heun(steps: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return heun_sample(gaussian_denoiser, SHAPE, gen, CPU, steps, SIGMA_MIN, SIGMA_MAX, RHO, stochastic=False)


def test_dpmpp2m_converges_at_second_order_to_the_exact_solution():
    target = exact(0)
    errors = [(dpm(n) - target).abs().max().item() for n in (16, 32, 64, 128)]
    for coarse, fine in itertools.pairwise(errors):
        assert coarse / fine > 3.0, errors  # 2nd order: ≈ 4× per doubling; 1st order would give ≈ 2×
    assert errors[-1] < 5e-3


def test_dpmpp2m_converges_to_the_heun_solution():
    gaps = [(dpm(n) - heun(n)).abs().max().item() for n in (16, 64, 128)]
    assert gaps[0] > gaps[1] > gaps[2]
    assert gaps[-1] < 1e-4 * SIGMA_MAX


def test_dpmpp2m_first_order_variant_would_fail_the_rate():
    """The same loop without the multistep correction (DDIM-like) is only 1st order: the rate test can fail."""

    def first_order(steps: int) -> torch.Tensor:
        from cfdg.diffusion.edm import karras_sigmas

        sig = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX, RHO)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * sig[0]
        for a, b in itertools.pairwise(sig):
            d = gaussian_denoiser(x, torch.tensor(a))
            x = d if b == 0 else (b / a) * x + (1 - b / a) * d
        return x

    target = exact(0)
    e32, e64 = ((first_order(n) - target).abs().max().item() for n in (32, 64))
    assert e32 / e64 < 3.0


@pytest.mark.parametrize("w", [0.0, 1.5])
def test_dpmpp2m_with_guidance_makes_one_batched_network_call_per_step(w):
    torch.manual_seed(0)
    net = Denoiser(d_data=5, width=16, depth=2).eval()
    labels = torch.ones(7, dtype=torch.long)
    calls: list[int] = []
    net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return guided_denoise(net, x, sigma, labels, w, 1.0)

    with torch.inference_mode():
        gen = torch.Generator().manual_seed(3)
        x = dpmpp2m_sample(guided, (7, 5), gen, CPU, 10, SIGMA_MIN, SIGMA_MAX, RHO)
        again = dpmpp2m_sample(guided, (7, 5), torch.Generator().manual_seed(3), CPU, 10, SIGMA_MIN, SIGMA_MAX, RHO)
    assert torch.isfinite(x).all() and torch.equal(x, again)
    assert calls == [7 * (2 if w > 0 else 1)] * 20  # 10 steps per run, two runs
    assert LABEL_NULL not in labels.tolist()


def test_library_sampler_dispatches_dpmpp2m_and_agrees_with_heun_on_a_fitted_model():
    """`sampling.solver: dpmpp2m` through cfdg.diffusion.sample: same ODE as deterministic Heun, fewer calls."""
    from cfdg.config import from_mapping
    from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
    from cfdg.diffusion.normaliser import to_vectors
    from cfdg.diffusion.sample import sample
    from cfdg.diffusion.variants.registry import get_variant
    from cfdg.fake_data import make_transitions

    offline, online = make_transitions(600, seed=1), make_transitions(300, seed=2)
    cfg = from_mapping(DiffusionConfig, {"width": 32, "depth": 2, "train_steps": 150}, "diffusion")
    cfdg = get_variant("cfdg")
    model, _ = cfdg.fit(offline, online, cfg, seed=0, progress=False)

    def draw(**kw) -> np.ndarray:
        spec = from_mapping(SamplingConfig, {"batch": 256, "guidance_w": 1.0, **kw}, "sampling")
        return to_vectors(sample(model, cfdg, 256, 1, seed=3, sampling=spec))

    dpm = draw(solver="dpmpp2m", steps=64)
    assert np.array_equal(dpm, draw(solver="dpmpp2m", steps=64))  # deterministic for a seed
    heun = draw(solver="heun", steps=64, stochastic=False)
    stoch = draw(solver="heun", steps=64, stochastic=True)
    scale = np.abs(heun).mean()
    assert np.abs(dpm - heun).mean() < 0.05 * scale  # same ODE, same initial noise
    assert np.abs(stoch - heun).mean() > 5 * np.abs(dpm - heun).mean()  # the comparison can fail


def test_the_solver_table_holds_exactly_the_names_sampling_accepts():
    """`sampling.solver` is validated against plain names (no torch); the sampler looks them up in edm.SOLVERS."""
    from cfdg.diffusion.config import SOLVERS as NAMES
    from cfdg.diffusion.edm import SOLVERS

    assert tuple(SOLVERS) == NAMES
