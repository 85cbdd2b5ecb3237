"""Sampling transitions from a fitted model, in memory or streamed into a synthetic store.

Labels: `cfdg` samples carry the class they were generated for (offline 0 / online 1);
`synther` samples come from the unconditional model and are all labelled online. In a store,
labels follow a fixed interleaved pattern (row i is online when ⌊(i+1)f⌋ > ⌊i·f⌋, f =
online_fraction), so every prefix has the right fraction and the order never depends on RNG.
Each chunk draws its noise from its own seed derived from (seed, chunk index): the store is
byte-identical for a seed, and no more than one chunk is ever in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cfdg.diffusion.denoiser import LABEL_NULL
from cfdg.diffusion.edm import guided_denoise, heun_sample
from cfdg.diffusion.model import DiffusionModel
from cfdg.diffusion.normaliser import from_vectors
from cfdg.errors import ConfigError
from cfdg.store import DEFAULT_CHUNK_ROWS, LABEL_ONLINE, StoreMeta, StoreWriter, Transitions


def chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, np.uint64)[0] >> 1)


def label_pattern(start: int, n: int, online_fraction: float) -> np.ndarray:
    """Labels of rows start..start+n: evenly interleaved, exact fraction in every prefix."""
    i = np.arange(start, start + n, dtype=np.float64)
    return (np.floor((i + 1) * online_fraction) > np.floor(i * online_fraction)).astype(np.uint8)


def sample_vectors(
    model: DiffusionModel,
    labels: np.ndarray | None,
    n: int,
    seed: int,
    guidance_w: float | None = None,
    steps: int | None = None,
    stochastic: bool | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """n vectors in data units from ONE sampler batch (labels None = null class, no guidance).

    Guidance evaluates conditional and null class together: each network call sees 2n rows.
    """
    cfg = model.cfg
    w = cfg.guidance_w if guidance_w is None else guidance_w
    device = model.device
    if labels is None or model.cfg.variant == "synther":
        cond = torch.full((n,), LABEL_NULL, dtype=torch.long, device=device)
        w = 0.0  # guidance needs a class; the null class is already the unconditional model
    else:
        cond = torch.from_numpy(labels.astype(np.int64)).to(device)
    net = model.sampling_net(precision)
    sd = cfg.sigma_data

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return guided_denoise(net, x, sigma, cond, w, sd)

    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        x = heun_sample(
            denoiser,
            (n, model.d_data),
            gen,
            device,
            steps or cfg.sample_steps,
            cfg.sigma_min,
            cfg.sigma_max,
            cfg.rho,
            cfg.stochastic if stochastic is None else stochastic,
            cfg.s_churn,
            cfg.s_tmin,
            cfg.s_tmax,
            cfg.s_noise,
        )
    return model.normaliser.denormalise(x.float().cpu().numpy())


def _check_label(model: DiffusionModel, label: int | None) -> None:
    if label not in (None, 0, 1):
        raise ConfigError(f"sample: label must be 0 (offline), 1 (online) or None (unconditional), got {label!r}")
    if model.cfg.variant == "synther" and label == 0:
        raise ConfigError(
            "sample: a 'synther' model is unconditional on online data; label 0 (offline) is not modelled"
        )


def sample(
    model: DiffusionModel,
    n: int,
    label: int | None,
    seed: int,
    guidance_w: float | None = None,
    steps: int | None = None,
    stochastic: bool | None = None,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: bool = False,
) -> Transitions:
    """n transitions of class `label` (None: the unconditional model, w ignored).

    Returned labels: the class for 0/1; 1 for every `synther` sample; None for unconditional
    samples of a `cfdg` model (they belong to neither class).
    """
    _check_label(model, label)
    batch = batch_size or model.cfg.sample_batch
    parts = []
    for k, start in enumerate(tqdm(range(0, n, batch), desc="sample", disable=not progress)):
        m = min(batch, n - start)
        cond = None if label is None else np.full(m, label, np.uint8)
        v = sample_vectors(model, cond, m, chunk_seed(seed, k), guidance_w, steps, stochastic, precision)
        out_labels = np.full(m, LABEL_ONLINE, np.uint8) if model.cfg.variant == "synther" else cond
        parts.append(from_vectors(v, model.obs_dim, model.act_dim, out_labels))
    if not parts:
        return from_vectors(np.zeros((0, model.d_data), np.float32), model.obs_dim, model.act_dim, None)
    return Transitions.concat(parts)


def sample_to_store(
    model: DiffusionModel,
    n: int,
    out_path: str | os.PathLike,
    meta: StoreMeta,
    seed: int,
    batch_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Stream n samples into a synthetic store, chunk by chunk, with the variant's label fractions."""
    if meta.kind != "synthetic":
        raise ConfigError(f"sample_to_store: meta.kind must be 'synthetic', got {meta.kind!r}")
    cfg = model.cfg
    fraction = 1.0 if cfg.variant == "synther" else cfg.online_fraction
    batch = batch_size or cfg.sample_batch
    with StoreWriter(out_path, meta, model.obs_dim, model.act_dim, DEFAULT_CHUNK_ROWS) as writer:
        for k, start in enumerate(tqdm(range(0, n, batch), desc="materialise", disable=not progress)):
            m = min(batch, n - start)
            labels = label_pattern(start, m, fraction)
            v = sample_vectors(model, labels, m, chunk_seed(seed, k))
            writer.append(from_vectors(v, model.obs_dim, model.act_dim, labels))
    return Path(out_path)


def write_empty_synthetic(out_path: str | os.PathLike, meta: StoreMeta, obs_dim: int, act_dim: int) -> Path:
    """The `none` variant's synthetic store: valid, labelled, zero rows, so later stages need no special case."""
    if meta.kind != "synthetic":
        raise ConfigError(f"write_empty_synthetic: meta.kind must be 'synthetic', got {meta.kind!r}")
    with StoreWriter(out_path, meta, obs_dim, act_dim, DEFAULT_CHUNK_ROWS):
        pass
    return Path(out_path)
