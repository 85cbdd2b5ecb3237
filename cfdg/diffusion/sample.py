"""Sampling transitions from a fitted model, in memory or streamed into a synthetic store.

Every knob comes from a SamplingConfig (params `sampling:`), none from the model: a fitted model
serves any sampler; the solver is looked up in edm.SOLVERS. The variant object the caller passes
(cfdg/diffusion/variants; this module looks up no name) says which labels the rows carry and hands
the sampler its denoiser for each batch: `cfdg` samples carry the class they were generated for (offline 0 /
online 1) and are guided; the unconditional variants (`synther`, `joint`) are labelled online,
which is how the agent's batch mixer uses them (as the synthetic share). In a store, labels follow a fixed
interleaved pattern (row i is online when ⌊(i+1)f⌋ > ⌊i·f⌋, f = generated_online_fraction), so every
prefix has the right share and the order never depends on RNG. Each chunk draws its noise from
its own seed derived from (seed, chunk index): the store is byte-identical for a seed, and no
more than one chunk is ever in memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
from tqdm import tqdm

from cfdg.device import torch_threads
from cfdg.diffusion.config import SamplingConfig
from cfdg.diffusion.edm import SOLVERS
from cfdg.diffusion.model import DiffusionModel
from cfdg.diffusion.normaliser import from_vectors
from cfdg.errors import ConfigError, StoreError
from cfdg.store import (
    DEFAULT_CHUNK_ROWS,
    LABEL_ONLINE,
    Annotate,
    StoreMeta,
    StoreWriter,
    Transitions,
    iter_store,
    read_attrs,
)

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SampledVariant(Protocol):
    """What the sampler asks of the variant it is handed (cfdg.diffusion.variants.base.GeneratorVariant).

    Spelled out here so this module imports no variant: it sits below them.
    """

    name: ClassVar[str]
    keeps_labels: ClassVar[bool]

    def store_online_share(self, sampling: SamplingConfig) -> float: ...

    def denoiser(
        self, model: DiffusionModel, labels: np.ndarray | None, n: int, sampling: SamplingConfig
    ) -> Denoiser: ...


def chunk_seed(seed: int, chunk: int) -> int:
    return int(np.random.SeedSequence([seed, chunk]).generate_state(1, np.uint64)[0] >> 1)


def label_pattern(start: int, n: int, online_share: float) -> np.ndarray:
    """Labels of rows start..start+n: evenly interleaved, exact share in every prefix."""
    i = np.arange(start, start + n, dtype=np.float64)
    return (np.floor((i + 1) * online_share) > np.floor(i * online_share)).astype(np.uint8)


def sample_vectors(
    model: DiffusionModel, denoiser: Denoiser, n: int, seed: int, sampling: SamplingConfig
) -> np.ndarray:
    """n vectors in data units from ONE sampler batch, denoised by `denoiser` (the variant's, for n rows).

    The solver is `sampling.solver`'s entry of edm.SOLVERS, given every axis of `sampling`; the
    noise range is the model's (it describes what the model was trained for).
    """
    cfg = model.cfg
    solver = SOLVERS[sampling.solver]
    gen = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        x = solver(
            denoiser,
            (n, model.d_data),
            gen,
            model.device,
            sampling.steps,
            cfg.sigma_min,
            cfg.sigma_max,
            cfg.rho,
            stochastic=sampling.stochastic,
            s_churn=sampling.s_churn,
            s_tmin=sampling.s_tmin,
            s_tmax=sampling.s_tmax,
            s_noise=sampling.s_noise,
        )
    return model.normaliser.denormalise(x.float().cpu().numpy())


def _check_variant(model: DiffusionModel, variant: SampledVariant) -> None:
    """The variant passed must be the one the model was fitted as, or its rows would be labelled wrongly."""
    if model.cfg.variant != variant.name:
        raise ConfigError(f"sample: a {model.cfg.variant!r} model cannot be sampled as the {variant.name!r} variant")


def _check_label(model: DiffusionModel, variant: SampledVariant, label: int | None) -> None:
    _check_variant(model, variant)
    if label not in (None, 0, 1):
        raise ConfigError(f"sample: label must be 0 (offline), 1 (online) or None (unconditional), got {label!r}")
    if not variant.keeps_labels and label == 0:
        raise ConfigError(f"sample: a '{model.cfg.variant}' model is unconditional; label 0 (offline) is not modelled")


def sample(
    model: DiffusionModel,
    variant: SampledVariant,
    n: int,
    label: int | None,
    seed: int,
    sampling: SamplingConfig,
    progress: bool = False,
) -> Transitions:
    """n transitions of class `label` (None: the unconditional model, w ignored).

    Returned labels: the class for 0/1; 1 for every sample of an unconditional variant; None
    for unconditional samples of a `cfdg` model (they belong to neither class).
    """
    _check_label(model, variant, label)
    unconditional = not variant.keeps_labels
    parts = []
    with torch_threads(sampling.threads):
        for k, start in enumerate(tqdm(range(0, n, sampling.batch), desc="sample", disable=not progress)):
            m = min(sampling.batch, n - start)
            cond = None if label is None else np.full(m, label, np.uint8)
            v = sample_vectors(model, variant.denoiser(model, cond, m, sampling), m, chunk_seed(seed, k), sampling)
            out_labels = np.full(m, LABEL_ONLINE, np.uint8) if unconditional else cond
            parts.append(from_vectors(v, model.obs_dim, model.act_dim, out_labels))
    if not parts:
        return from_vectors(np.zeros((0, model.d_data), np.float32), model.obs_dim, model.act_dim, None)
    return Transitions.concat(parts)


def kept_rows(prev: str | os.PathLike | None, sampling: SamplingConfig) -> Iterator[Transitions]:
    """The rows of the previous synthetic store that round k keeps, oldest first.

    `replace` keeps none; `fifo` keeps the newest capacity − n_rows rows, so that with this
    round's samples appended the store holds at most `capacity` rows, newest last.
    """
    if sampling.buffer == "replace" or prev is None:
        return
    attrs = read_attrs(prev)
    if attrs["kind"] != "synthetic":
        raise StoreError(f"{prev}: the previous synthetic buffer has kind {attrs['kind']!r}, expected 'synthetic'")
    n_prev = int(attrs["counts"]["rows"])
    skip = max(0, n_prev - (sampling.capacity - sampling.n_rows))
    seen = 0
    for block in iter_store(prev):
        lo = min(max(skip - seen, 0), len(block))
        seen += len(block)
        if lo < len(block):
            yield block.take(slice(lo, None))


def sample_to_store(
    model: DiffusionModel,
    variant: SampledVariant,
    out_path: str | os.PathLike,
    meta: StoreMeta,
    seed: int,
    sampling: SamplingConfig,
    prev: str | os.PathLike | None = None,
    progress: bool = True,
    annotate: Annotate | None = None,
) -> Path:
    """Write the round's synthetic store: the kept rows of `prev` (fifo), then n_rows new samples.

    `annotate` measures the complete store before it is renamed into place (see StoreWriter).

    New samples carry the variant's label shares. With `fifo` the store is one artifact per
    round all the same: round k's store is complete on its own, round k-1's is only read.
    """
    if meta.kind != "synthetic":
        raise ConfigError(f"sample_to_store: meta.kind must be 'synthetic', got {meta.kind!r}")
    _check_variant(model, variant)
    share = variant.store_online_share(sampling)
    n, batch = sampling.n_rows, sampling.batch
    with (
        torch_threads(sampling.threads),
        StoreWriter(out_path, meta, model.obs_dim, model.act_dim, DEFAULT_CHUNK_ROWS, annotate) as writer,
    ):
        for block in kept_rows(prev, sampling):
            writer.append(block)
        for k, start in enumerate(tqdm(range(0, n, batch), desc="materialise", disable=not progress)):
            m = min(batch, n - start)
            labels = label_pattern(start, m, share)
            v = sample_vectors(model, variant.denoiser(model, labels, m, sampling), m, chunk_seed(seed, k), sampling)
            writer.append(from_vectors(v, model.obs_dim, model.act_dim, labels))
    return Path(out_path)


def write_empty_synthetic(out_path: str | os.PathLike, meta: StoreMeta, obs_dim: int, act_dim: int) -> Path:
    """The `none` variant's synthetic store: valid, labelled, zero rows, so later stages need no special case."""
    if meta.kind != "synthetic":
        raise ConfigError(f"write_empty_synthetic: meta.kind must be 'synthetic', got {meta.kind!r}")
    with StoreWriter(out_path, meta, obs_dim, act_dim, DEFAULT_CHUNK_ROWS):
        pass
    return Path(out_path)
