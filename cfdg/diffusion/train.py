"""fit_diffusion: train the EDM denoiser on the rows and class ids it is given (plain EDM, no variant).

The variant (cfdg/diffusion/variants) chooses what the fit sees and calls this with a TrainingSet:
`cfdg` trains on both buffers with labels 0/1 and label dropout (p_uncond) so one network is both
the conditional and the unconditional model; `synther` trains on online data only with the null
label; `joint` trains on offline ∪ online with the null label for every row (the paper's Table 3
"w/o guidance"). All randomness comes from one seeded generator: same data, config and seed give
the same weights bit for bit on CPU.

Batches are uniform over rows, or with `fit_online_fraction` q each batch row comes from the
online buffer with probability q whatever the buffers' sizes (round 1 holds ~4x more offline
than online rows, so uniform batches spend most of the conditional model's steps on the offline
class); the normaliser is then fitted to that mixture, not to the stored rows. The EMA is
torch's AveragedModel with an EMA average, the schedule torch's CosineAnnealingLR. A fit can
start from a previous round's model (`warm_start`); the normaliser is always refitted to the
round's data, the optimiser and the EMA start afresh, the number of steps is the same.

What an experiment changes is an argument, as SynthER passes its denoising network and normaliser
to its model builder: `net=` (the network to train; default a fresh `build_denoiser`) and
`normaliser=` (fixed statistics; default fitted to the batches' mixture).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from cfdg.device import autocast, select_device, torch_threads
from cfdg.diffusion.config import ARCHITECTURE_KEYS, DiffusionConfig
from cfdg.diffusion.denoiser import LABEL_NULL
from cfdg.diffusion.edm import edm_loss
from cfdg.diffusion.model import DiffusionModel, build_denoiser
from cfdg.diffusion.normaliser import Normaliser
from cfdg.errors import ConfigError

N_CURVE_POINTS = 20


@dataclasses.dataclass(frozen=True)
class TrainingSet:
    """What the denoiser is fitted on, as the variant chose it (`GeneratorVariant.training_set`).

    Rows are offline first, then online (`counts` says how many of each): the batches' online share
    relies on that order. `labels` are the class ids the network sees; with `drop_labels`, label
    dropout (p_uncond) also trains the null class (classifier-free guidance).
    """

    vectors: np.ndarray
    labels: np.ndarray
    counts: dict[str, int]
    obs_dim: int
    act_dim: int
    drop_labels: bool = False


def effective_train_steps(cfg: DiffusionConfig, n_rows: int, warm: bool = False) -> int:
    """train_steps (warm_start_steps for a warm-started fit, when set), grown to
    ceil(steps_per_row · rows) when that is more, capped by max_train_steps."""
    base = cfg.warm_start_steps if warm and cfg.warm_start_steps else cfg.train_steps
    steps = max(base, math.ceil(cfg.steps_per_row * n_rows))
    return min(steps, cfg.max_train_steps) if cfg.max_train_steps else steps


def online_share(cfg: DiffusionConfig, counts: dict[str, int]) -> float | None:
    """The batch's online share for this fit: None (uniform over rows) unless rows of both buffers are modelled."""
    both = counts["offline"] > 0 and counts["online"] > 0
    return cfg.fit_online_fraction if both else None


def row_weights(counts: dict[str, int], share: float | None) -> np.ndarray | None:
    """Each row's probability of being drawn, as `batch_indices` draws them (None: uniform)."""
    if share is None:
        return None
    n_off, n_on = counts["offline"], counts["online"]
    return np.concatenate([np.full(n_off, (1 - share) / n_off), np.full(n_on, share / n_on)])


def batch_indices(
    counts: dict[str, int], batch: int, share: float | None, gen: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Row indices of one batch: uniform over all rows, or each row online with probability `share`.

    Rows are offline first, then online (`TrainingSet`'s order).
    """
    n_off, n_on = counts["offline"], counts["online"]
    if share is None:
        return torch.randint(n_off + n_on, (batch,), generator=gen, device=device)
    online = torch.rand(batch, generator=gen, device=device) < share
    i_off = torch.randint(n_off, (batch,), generator=gen, device=device)
    i_on = torch.randint(n_on, (batch,), generator=gen, device=device) + n_off
    return torch.where(online, i_on, i_off)


def check_warm_start(cfg: DiffusionConfig, init: DiffusionModel) -> None:
    """A warm start needs the same network shape and variant; name the first difference."""
    for key in ("variant", *ARCHITECTURE_KEYS):
        mine, theirs = getattr(cfg, key), getattr(init.cfg, key)
        if mine != theirs:
            raise ConfigError(
                f"diffusion.warm_start: the previous round's model has {key} {theirs!r}, this fit {mine!r}"
            )


def fit_diffusion(
    data: TrainingSet,
    cfg: DiffusionConfig,
    seed: int,
    progress: bool = True,
    init: DiffusionModel | None = None,
    *,
    net: nn.Module | None = None,
    normaliser: Normaliser | None = None,
) -> tuple[DiffusionModel, dict[str, Any]]:
    """Train for the effective number of Adam steps, from `init`'s weights when given.

    `net`: the network to train (default `build_denoiser(cfg, ..., seed)`); `normaliser`: fixed
    statistics (default fitted to the rows as the batches draw them). Returns the model and metrics
    (losses, effective steps, speed, counts).
    """
    with torch_threads(cfg.threads):
        return _fit(data, cfg, seed, progress, init, net, normaliser)


def _fit(
    data: TrainingSet,
    cfg: DiffusionConfig,
    seed: int,
    progress: bool,
    init: DiffusionModel | None,
    net: nn.Module | None,
    normaliser: Normaliser | None,
) -> tuple[DiffusionModel, dict[str, Any]]:
    vectors, labels_np, counts = data.vectors, data.labels, data.counts
    if len(vectors) == 0:
        raise ConfigError("fit_diffusion: no training rows; there is nothing to model")
    steps = effective_train_steps(cfg, len(vectors), warm=init is not None)
    share = online_share(cfg, counts)
    if normaliser is None:
        normaliser = Normaliser.fit(vectors, row_weights(counts, share))
    device = select_device(cfg.device)
    if net is None:
        net = build_denoiser(cfg, data.obs_dim, data.act_dim, seed)
    if init is not None:
        check_warm_start(cfg, init)
        net.load_state_dict(init.net.state_dict())
    net = net.to(device)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay))
    train_net = torch.compile(net) if cfg.compile and device.type == "cuda" else net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps) if cfg.lr_schedule == "cosine" else None

    rows = torch.from_numpy(normaliser.normalise(vectors)).to(device)
    labels = torch.from_numpy(labels_np).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    use_dropout = data.drop_labels and cfg.p_uncond > 0

    window = max(1, steps // N_CURVE_POINTS)
    curve: list[float] = []
    acc = torch.zeros((), device=device)
    acc_n = 0
    start = time.perf_counter()
    for step in tqdm(range(steps), desc="fit diffusion", disable=not progress):
        idx = batch_indices(counts, cfg.batch_size, share, gen, device)
        y, c = rows[idx], labels[idx]
        if use_dropout:
            drop = torch.rand(cfg.batch_size, generator=gen, device=device) < cfg.p_uncond
            c = torch.where(drop, torch.full_like(c, LABEL_NULL), c)
        with autocast(device, cfg.precision):
            loss = edm_loss(train_net, y, c, cfg.sigma_data, cfg.p_mean, cfg.p_std, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        if schedule is not None:
            schedule.step()
        ema.update_parameters(net)
        acc += loss.detach()
        acc_n += 1
        if acc_n == window or step == steps - 1:
            curve.append(float(acc) / acc_n)
            acc.zero_()
            acc_n = 0
    seconds = time.perf_counter() - start

    model = DiffusionModel(
        cfg=cfg,
        obs_dim=data.obs_dim,
        act_dim=data.act_dim,
        net=net,
        ema=ema.module.requires_grad_(False).eval(),
        normaliser=normaliser,
        device=device,
        optimizer_state=opt.state_dict(),
        step=steps,
    )
    metrics = {
        "final_loss": curve[-1],
        "loss_curve": curve,
        "loss_curve_every": window,
        "min_loss": min(curve),
        "train_steps_effective": steps,
        "warm_started": init is not None,
        "steps_per_s": steps / seconds if seconds > 0 else float("inf"),
        "train_seconds": seconds,
        "n_train": counts,
        "n_params": sum(p.numel() for p in net.parameters()),
        "device": str(device),
    }
    return model, metrics
