"""`edis` (Liu et al. 2024, Energy-Guided Diffusion Sampling): the paper's Table 2 / Figure 2 baseline.

An unconditional diffusion model of offline ∪ online (EDIS's replay buffer) whose sampler is
steered towards the online distribution by energy functions of the state, the current policy's
action and the dynamics (cfdg/diffusion/energy.py, fitted by cfdg/diffusion/edis.py). Its samples
are used as online data: the store labels every row online. Settings: `diffusion.edis` (fit),
`sampling.edis` (guidance scales); the README's "EDIS" section gives each one's source.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from cfdg.diffusion.edis import fit_energies, load_edis, previous_energies, save_edis
from cfdg.diffusion.energy import energy_guidance
from cfdg.diffusion.variants.base import Denoiser, GeneratorVariant, Policy
from cfdg.errors import CheckpointError

if TYPE_CHECKING:
    from cfdg.diffusion.config import SamplingConfig
    from cfdg.diffusion.model import DiffusionModel
    from cfdg.store import Transitions


class EDIS(GeneratorVariant):
    name: ClassVar[str] = "edis"
    display_name: ClassVar[str] = "EDIS"
    trains_on = ("offline", "online")  # iql_edis.py: the replay buffer holds the offline data and every online row
    needs_policy: ClassVar[bool] = True

    def denoiser(self, model: DiffusionModel, labels: np.ndarray | None, n: int, sampling: SamplingConfig) -> Denoiser:
        """The null-class denoiser with the energies' guidance: D' = D − σ·g (EDIS adds g to (x − D)/σ)."""
        energies = getattr(model, "energies", None)
        if energies is None:
            raise CheckpointError("an 'edis' model without its energy functions: load it with the edis loader")
        base = super().denoiser(model, None, n, sampling)
        guide = sampling.edis
        scales = {"state": guide.state, "policy": guide.policy, "transition": guide.transition}

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return base(x, sigma) - sigma * energy_guidance(energies, scales, x, sigma, guide.norm_clip)

        return denoise

    def fit_extras(
        self,
        model: DiffusionModel,
        offline: Transitions | None,
        online: Transitions,
        seed: int,
        policy: Policy | None = None,
        previous: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> tuple[DiffusionModel, dict[str, Any]]:
        """The energy functions, continuing from round k-1's when `diffusion.edis.warm_start`."""
        cfg = model.cfg.edis
        init = previous_energies(previous, cfg, model.obs_dim, model.act_dim) if cfg.warm_start else None
        guided, metrics = fit_energies(model, online, cfg, seed, policy, init, progress)
        return guided, {**metrics, "energy_warm_started": init is not None}

    def save(self, model: DiffusionModel, path: str | os.PathLike) -> Path:
        return save_edis(model, path)  # type: ignore[arg-type]

    def load(self, path: str | os.PathLike, device: str | torch.device | None = None) -> DiffusionModel:
        return load_edis(path, device)
