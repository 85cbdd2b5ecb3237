"""DiffusionModel: the trained denoiser, its EMA copy, normaliser and config, as one object."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from cfdg.diffusion.config import DiffusionConfig
from cfdg.diffusion.denoiser import Denoiser
from cfdg.diffusion.normaliser import Normaliser, vector_dim


def build_denoiser(cfg: DiffusionConfig, obs_dim: int, act_dim: int, seed: int) -> Denoiser:
    """Initialise from `seed` without touching the global torch RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Denoiser(
            vector_dim(obs_dim, act_dim),
            cfg.width,
            cfg.depth,
            cfg.activation,
            cfg.layer_norm,
            cfg.fourier_features,
            cfg.emb_dim,
        )


@dataclasses.dataclass
class DiffusionModel:
    """Sampling uses `ema`; `net` and `optimizer_state` are kept so a checkpoint can resume training."""

    cfg: DiffusionConfig
    obs_dim: int
    act_dim: int
    net: nn.Module
    ema: nn.Module
    normaliser: Normaliser
    device: torch.device
    optimizer_state: dict[str, Any] | None = None
    step: int = 0
    _compiled: Any = dataclasses.field(default=None, repr=False)

    @property
    def d_data(self) -> int:
        return vector_dim(self.obs_dim, self.act_dim)

    def sampling_net(self) -> nn.Module:
        """The EMA network, compiled once when cfg.compile is set and the device is CUDA."""
        if self.cfg.compile and self.device.type == "cuda":
            if self._compiled is None:
                self._compiled = torch.compile(self.ema)
            return self._compiled
        return self.ema
