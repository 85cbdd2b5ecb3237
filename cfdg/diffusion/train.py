"""fit_diffusion: train the EDM denoiser on offline ∪ online transitions, label = buffer.

Variants share this code: `cfdg` trains on both buffers with labels 0/1 and label dropout
(p_uncond) so one network is both the conditional and the unconditional model; `synther`
trains on online data only with the null label (a purely unconditional model); `joint` trains
on offline ∪ online with the null label for every row (one unconditional model, the paper's
Table 3 "w/o guidance"); `none` has no model and is an error here. All randomness comes from
one seeded generator: same data, config and seed give the same weights bit for bit on CPU.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cfdg.device import autocast, select_device, torch_threads
from cfdg.diffusion.config import DiffusionConfig
from cfdg.diffusion.denoiser import LABEL_NULL
from cfdg.diffusion.edm import edm_loss
from cfdg.diffusion.model import DiffusionModel, build_denoiser
from cfdg.diffusion.normaliser import Normaliser, to_vectors
from cfdg.errors import ConfigError
from cfdg.store import LABEL_OFFLINE, LABEL_ONLINE, Transitions

N_CURVE_POINTS = 20


def training_data(
    offline: Transitions | None, online: Transitions, cfg: DiffusionConfig
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(vectors, labels, counts) for the variant; labels are the class ids fed to the network."""
    if cfg.variant == "none":
        raise ConfigError("diffusion.variant is 'none': no diffusion model is fitted for this variant")
    if len(online) == 0:
        raise ConfigError("fit_diffusion: the online buffer is empty; there is nothing to model")
    if cfg.variant == "synther":
        v = to_vectors(online)
        return v, np.full(len(v), LABEL_NULL, np.int64), {"offline": 0, "online": len(v)}
    if offline is None or len(offline) == 0:
        raise ConfigError(f"fit_diffusion: variant {cfg.variant!r} needs offline data (got none)")
    if (offline.obs_dim, offline.act_dim) != (online.obs_dim, online.act_dim):
        raise ConfigError(
            f"fit_diffusion: offline obs/act dims {offline.obs_dim}/{offline.act_dim} differ from "
            f"online {online.obs_dim}/{online.act_dim}"
        )
    v = np.concatenate([to_vectors(offline), to_vectors(online)])
    labels = np.concatenate([np.full(len(offline), LABEL_OFFLINE), np.full(len(online), LABEL_ONLINE)])
    if cfg.variant == "joint":
        labels = np.full(len(v), LABEL_NULL)
    return v, labels.astype(np.int64), {"offline": len(offline), "online": len(online)}


def learning_rate(cfg: DiffusionConfig, step: int) -> float:
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.train_steps))


def fit_diffusion(
    offline: Transitions | None, online: Transitions, cfg: DiffusionConfig, seed: int, progress: bool = True
) -> tuple[DiffusionModel, dict[str, Any]]:
    """Train for cfg.train_steps Adam steps; returns the model and metrics (losses, speed, counts)."""
    with torch_threads(cfg.threads):
        return _fit(offline, online, cfg, seed, progress)


def _fit(
    offline: Transitions | None, online: Transitions, cfg: DiffusionConfig, seed: int, progress: bool
) -> tuple[DiffusionModel, dict[str, Any]]:
    vectors, labels_np, counts = training_data(offline, online, cfg)
    normaliser = Normaliser.fit(vectors)
    device = select_device(cfg.device)
    net = build_denoiser(cfg, online.obs_dim, online.act_dim, seed).to(device)
    ema = copy.deepcopy(net).requires_grad_(False)
    train_net = torch.compile(net) if cfg.compile and device.type == "cuda" else net
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    data = torch.from_numpy(normaliser.normalise(vectors)).to(device)
    labels = torch.from_numpy(labels_np).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    n = data.shape[0]
    use_dropout = cfg.variant == "cfdg" and cfg.p_uncond > 0

    window = max(1, cfg.train_steps // N_CURVE_POINTS)
    curve: list[float] = []
    acc = torch.zeros((), device=device)
    acc_n = 0
    start = time.perf_counter()
    for step in tqdm(range(cfg.train_steps), desc="fit diffusion", disable=not progress):
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        idx = torch.randint(n, (cfg.batch_size,), generator=gen, device=device)
        y, c = data[idx], labels[idx]
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
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), net.parameters(), strict=True):
                p_ema.lerp_(p, 1 - cfg.ema_decay)
        acc += loss.detach()
        acc_n += 1
        if acc_n == window or step == cfg.train_steps - 1:
            curve.append(float(acc) / acc_n)
            acc.zero_()
            acc_n = 0
    seconds = time.perf_counter() - start

    model = DiffusionModel(
        cfg=cfg,
        obs_dim=online.obs_dim,
        act_dim=online.act_dim,
        net=net,
        ema=ema.eval(),
        normaliser=normaliser,
        device=device,
        optimizer_state=opt.state_dict(),
        step=cfg.train_steps,
    )
    metrics = {
        "final_loss": curve[-1],
        "loss_curve": curve,
        "loss_curve_every": window,
        "min_loss": min(curve),
        "steps_per_s": cfg.train_steps / seconds if seconds > 0 else float("inf"),
        "train_seconds": seconds,
        "n_train": counts,
        "n_params": sum(p.numel() for p in net.parameters()),
        "device": str(device),
    }
    return model, metrics
