"""GeneratorVariant: what one way of generating the synthetic store trains on, samples and how it denoises.

A variant is a class with a few class attributes and, where it needs more, overridden methods:

- `fits_model`: false for `none` (no model, an empty store);
- `trains_on`: the buffers the model is fitted on (rows are offline first, then online);
- `keeps_labels`: rows carry their buffer's class (offline 0 / online 1), else the null class; it
  also decides which labels a store's rows carry (`store_online_share`: the classes at
  `generated_online_fraction`, or all online);
- `drops_labels`: label dropout (`p_uncond`) also trains the null class: classifier-free guidance;
- `guided`: the sampler mixes conditional and null class with `sampling.guidance_w` (`denoiser`);
- `needs_policy`: `fit@k` hands it the round's agent policy;
- `display_name`: what reports call it.

The variant is the generator's top room: `fit` chooses the training rows and labels from these
attributes and calls the plain EDM fit (`cfdg.diffusion.train.fit_diffusion`, which knows no
variant), and `denoiser` hands the sampler (`cfdg.diffusion.sample`) its D(x; σ). A variant that fits
more (`edis`: energy functions) does it in `fit_extras` and keeps it in its checkpoint (`save`,
`load`) and its `denoiser`. The stage resolves the variant once (`registry.get_variant`) and passes
this object down; nothing below looks a name up.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch

from cfdg.diffusion.checkpoint import load_diffusion, save_diffusion
from cfdg.diffusion.denoiser import LABEL_NULL
from cfdg.diffusion.edm import guided_denoise
from cfdg.diffusion.normaliser import Normaliser, to_vectors
from cfdg.diffusion.train import TrainingSet, fit_diffusion
from cfdg.errors import ConfigError
from cfdg.store import LABEL_OFFLINE, LABEL_ONLINE

if TYPE_CHECKING:
    from torch import nn

    from cfdg.diffusion.config import DiffusionConfig, SamplingConfig
    from cfdg.diffusion.model import DiffusionModel
    from cfdg.store import Transitions

Buffer = Literal["offline", "online"]
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# The current agent's policy, states -> actions (data units): what `edis`'s policy energy learns.
Policy = Callable[[np.ndarray], np.ndarray]


class GeneratorVariant:
    """A way to generate synthetic transitions; the defaults are an unconditional diffusion model."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    fits_model: ClassVar[bool] = True
    trains_on: ClassVar[tuple[Buffer, ...]] = ("offline", "online")
    keeps_labels: ClassVar[bool] = False
    drops_labels: ClassVar[bool] = False
    guided: ClassVar[bool] = False
    needs_policy: ClassVar[bool] = False  # fit@k hands it the round's agent policy

    # --- what it trains on ------------------------------------------------------------------
    def training_labels(self, counts: dict[str, int]) -> np.ndarray:
        """Class ids of the training rows (offline first, then online), as the network sees them."""
        if not self.keeps_labels:
            return np.full(counts["offline"] + counts["online"], LABEL_NULL, np.int64)
        return np.concatenate(
            [np.full(counts["offline"], LABEL_OFFLINE), np.full(counts["online"], LABEL_ONLINE)]
        ).astype(np.int64)

    def training_set(self, offline: Transitions | None, online: Transitions) -> TrainingSet:
        """The rows the denoiser is fitted on and the class ids the network sees.

        Rows are offline first, then online (`counts` says how many of each): the batches' online
        share relies on that order.
        """
        if not self.fits_model:
            raise ConfigError(f"diffusion.variant is {self.name!r}: no diffusion model is fitted for this variant")
        if len(online) == 0:
            raise ConfigError("fit_diffusion: the online buffer is empty; there is nothing to model")
        dims = {"obs_dim": online.obs_dim, "act_dim": online.act_dim, "drop_labels": self.drops_labels}
        if "offline" not in self.trains_on:
            v = to_vectors(online)
            counts = {"offline": 0, "online": len(v)}
            return TrainingSet(v, self.training_labels(counts), counts, **dims)
        if offline is None or len(offline) == 0:
            raise ConfigError(f"fit_diffusion: variant {self.name!r} needs offline data (got none)")
        if (offline.obs_dim, offline.act_dim) != (online.obs_dim, online.act_dim):
            raise ConfigError(
                f"fit_diffusion: offline obs/act dims {offline.obs_dim}/{offline.act_dim} differ from "
                f"online {online.obs_dim}/{online.act_dim}"
            )
        v = np.concatenate([to_vectors(offline), to_vectors(online)])
        counts = {"offline": len(offline), "online": len(online)}
        return TrainingSet(v, self.training_labels(counts), counts, **dims)

    def fit(
        self,
        offline: Transitions | None,
        online: Transitions,
        cfg: DiffusionConfig,
        seed: int,
        progress: bool = True,
        init: DiffusionModel | None = None,
        net: nn.Module | None = None,
        normaliser: Normaliser | None = None,
    ) -> tuple[DiffusionModel, dict[str, Any]]:
        """Fit the denoiser on this variant's rows (`fit_diffusion`; `net`, `normaliser` as it takes them).

        `cfg.variant` must name this variant: the checkpoint records it, and a model fitted as one
        variant and labelled another would be sampled wrongly.
        """
        if cfg.variant != self.name:
            raise ConfigError(f"diffusion.variant is {cfg.variant!r}, but this is the {self.name!r} variant's fit")
        data = self.training_set(offline, online)
        return fit_diffusion(data, cfg, seed, progress, init, net=net, normaliser=normaliser)

    # --- what it samples ----------------------------------------------------------------------
    def store_online_share(self, sampling: SamplingConfig) -> float:
        """Share of a store's rows labelled online: the classes' share, or all rows for an unconditional model."""
        return sampling.generated_online_fraction if self.keeps_labels else 1.0

    def denoiser(self, model: DiffusionModel, labels: np.ndarray | None, n: int, sampling: SamplingConfig) -> Denoiser:
        """D(x; σ) for one sampler batch of n rows of `labels` (None: the null class, no guidance)."""
        w = sampling.guidance_w if self.guided else 0.0
        if labels is None or not self.keeps_labels:
            cond = torch.full((n,), LABEL_NULL, dtype=torch.long, device=model.device)
            w = 0.0  # guidance needs a class; the null class is already the unconditional model
        else:
            cond = torch.from_numpy(labels.astype(np.int64)).to(model.device)
        net = model.sampling_net(sampling.precision)
        sd = model.cfg.sigma_data

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            return guided_denoise(net, x, sigma, cond, w, sd)

        return denoise

    # --- fitting beyond the denoiser, and the checkpoint ---------------------------------------
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
        """What the variant fits after the denoiser (train.fit_diffusion); none by default.

        `policy` is the round's agent policy (for `needs_policy`), `previous` round k-1's checkpoint.
        """
        return model, {}

    def save(self, model: DiffusionModel, path: str | os.PathLike) -> Path:
        return save_diffusion(model, path)

    def load(self, path: str | os.PathLike, device: str | torch.device | None = None) -> DiffusionModel:
        """This variant's model from `path`; a checkpoint of another variant is refused in one line."""
        return load_diffusion(path, device, variant=self.name)
