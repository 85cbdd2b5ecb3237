"""EDIS (Liu et al. 2024): fitting its energy functions on a fitted diffusion model, and its checkpoint part.

After the diffusion model is fitted (offline ∪ online, unconditional, as EDIS's iql_edis.py does
with its replay buffer), each energy learns to tell online rows from the model's own rows:

- `state`: positives are online rows, negatives unconditional model samples;
- `policy`: positives are online rows whose action is the current policy's for that state,
  negatives the model's (action, reward, next state) for the same state;
- `transition`: positives are online rows, negatives the model's (reward, next state) for the
  same state and action.

"For the same state" is inpainting by replacement: the sampler's denoiser returns the known
columns as they are, so they end exactly on the positive's values and the free columns are
generated around them. One pool of `steps · batch` positives (or `pool`) with `negatives` model
rows each is drawn per energy; every update takes the next `batch` positives (fresh rows each
update, as EDIS samples afresh each update; a smaller pool is cycled through), each group
noised to one σ drawn along the sampler's Karras schedule. EDIS draws its negatives as partly
denoised sampler states at 8 of the 128 steps (the state energy at the first only);
forward-noising finished samples gives the same marginals at every level with one sampler run,
which is what makes this affordable on a CPU.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfdg.diffusion.checkpoint import checkpoint_variant, load_diffusion, save_diffusion
from cfdg.diffusion.config import EdisConfig
from cfdg.diffusion.denoiser import LABEL_NULL
from cfdg.diffusion.edm import denoise, heun_sample
from cfdg.diffusion.energy import EnergySet, contrastive_loss, energy_part
from cfdg.diffusion.model import DiffusionModel
from cfdg.diffusion.normaliser import to_vectors
from cfdg.diffusion.sample import chunk_seed
from cfdg.errors import CheckpointError, ConfigError
from cfdg.io import read_checkpoint
from cfdg.store import Transitions

ENERGY_FORMAT = "cfdg-edis-energies"
ENERGY_VERSION = 1
NEGATIVE_BATCH = 4096  # rows per sampler call while drawing negatives


@dataclasses.dataclass
class EnergyGuidedModel(DiffusionModel):
    """A diffusion model plus the energy functions that steer its sampler (variant `edis`)."""

    energies: EnergySet | None = None
    energy_cfg: EdisConfig | None = None


def known_columns(name: str, obs_dim: int, act_dim: int) -> slice | None:
    """The columns a negative shares with its positive: none (state), s (policy), s and a (transition)."""
    return {"state": None, "policy": slice(0, obs_dim), "transition": slice(0, obs_dim + act_dim)}[name]


def draw_negatives(
    model: DiffusionModel, n: int, known: slice | None, given: torch.Tensor | None, steps: int, seed: int
) -> torch.Tensor:
    """n normalised rows of the unguided model (stochastic EDM Heun), columns `known` fixed to `given`'s."""
    cfg, device = model.cfg, model.device
    net = model.sampling_net("fp32")
    out = []
    for k, start in enumerate(range(0, n, NEGATIVE_BATCH)):
        m = min(NEGATIVE_BATCH, n - start)
        cond = torch.full((m,), LABEL_NULL, dtype=torch.long, device=device)
        fixed = None if given is None else given[start : start + m].to(device)
        denoiser = _inpainting(net, cond, known, fixed, cfg.sigma_data)
        gen = torch.Generator().manual_seed(chunk_seed(seed, k))
        with torch.inference_mode():
            x = heun_sample(denoiser, (m, model.d_data), gen, device, steps, cfg.sigma_min, cfg.sigma_max, cfg.rho)
            if known is not None and fixed is not None:
                x[:, known] = fixed[:, known]
        out.append(x.float().clone())
    return torch.cat(out)


def _inpainting(
    net: torch.nn.Module, cond: torch.Tensor, known: slice | None, fixed: torch.Tensor | None, sigma_data: float
):
    """The null-class denoiser that returns the `known` columns as `fixed` holds them (replacement)."""

    def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        d = denoise(net, x, sigma, cond, sigma_data)
        if known is not None and fixed is not None:
            d[:, known] = fixed[:, known]
        return d

    return denoiser


def karras_levels(n: int, model: DiffusionModel, gen: torch.Generator) -> torch.Tensor:
    """[n, 1] noise levels σ = (σmax^(1/ρ) + t·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ, t uniform: the sampler's path."""
    cfg = model.cfg
    a, b = cfg.sigma_max ** (1 / cfg.rho), cfg.sigma_min ** (1 / cfg.rho)
    t = torch.rand(n, 1, generator=gen)
    return ((a + t * (b - a)) ** cfg.rho).to(model.device)


def positives(
    model: DiffusionModel, online: Transitions, cfg: EdisConfig, policy: Any, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """Per energy, `pool` (or `steps · batch`) normalised online rows (policy: with the policy's action)."""
    rows = online.take(rng.integers(len(online), size=cfg.pool or cfg.steps * cfg.batch))
    v = to_vectors(rows)
    out = {}
    for name in cfg.energies:
        w = v
        if name == "policy":
            if policy is None:
                raise ConfigError("diffusion.edis.energies: the policy energy needs the round's agent (none given)")
            w = v.copy()
            w[:, energy_part("policy", online.obs_dim, online.act_dim)] = policy(rows.observations)
        out[name] = torch.from_numpy(model.normaliser.normalise(w)).float()
    return out


def fit_energies(
    model: DiffusionModel,
    online: Transitions,
    cfg: EdisConfig,
    seed: int,
    policy: Any = None,
    init: EnergySet | None = None,
    progress: bool = False,
) -> tuple[EnergyGuidedModel, dict[str, Any]]:
    """Train `cfg.energies` on online rows against the model's rows; from `init`'s weights when given.

    `policy` maps states to the current policy's actions (data units); needed for `policy`.
    Returns the guided model and metrics (per energy: last loss and top-1 accuracy, chance 1/(K+1)).
    """
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    obs, act = model.obs_dim, model.act_dim
    with torch.random.fork_rng(devices=[]):  # initialise from `seed`, not from torch's global RNG
        torch.manual_seed(seed)
        energies = EnergySet(tuple(cfg.energies), obs, act, cfg.hidden, cfg.layers)
    if init is not None:
        energies.load_state_dict(init.state_dict())
    energies = energies.to(model.device)
    pos = positives(model, online, cfg, policy, rng)
    metrics: dict[str, Any] = {"energy_steps": cfg.steps, "energy_negatives": cfg.negatives}
    for i, name in enumerate(cfg.energies):
        known = known_columns(name, obs, act)
        given = pos[name].repeat_interleave(cfg.negatives, dim=0)
        neg = draw_negatives(model, len(given), known, given, cfg.negative_steps, chunk_seed(seed, 1000 + i))
        neg = neg.reshape(len(pos[name]), cfg.negatives, -1)
        net = energies.nets[name]
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        n_pos = len(pos[name])
        for step in range(cfg.steps):
            rows = (torch.arange(cfg.batch) + step * cfg.batch) % n_pos  # the next batch, cycling through the pool
            sigma = karras_levels(cfg.batch, model, gen)
            loss, acc = contrastive_loss(net, pos[name][rows].to(model.device), neg[rows].to(model.device), sigma, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        metrics[f"energy_{name}_loss"] = float(loss.detach())
        metrics[f"energy_{name}_accuracy"] = float(acc)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(DiffusionModel) if f.init}
    guided = EnergyGuidedModel(**fields, energies=energies.requires_grad_(False).eval(), energy_cfg=cfg)
    return guided, metrics


# --- the checkpoint's energy part -----------------------------------------------------------------


def save_edis(model: EnergyGuidedModel, path: str | os.PathLike) -> Path:
    """The diffusion checkpoint plus `energies` (own format tag and version)."""
    if model.energies is None or model.energy_cfg is None:
        raise CheckpointError(f"{path}: an 'edis' model without energy functions cannot be saved")
    part = {
        "format": ENERGY_FORMAT,
        "version": ENERGY_VERSION,
        "names": list(model.energies.nets),
        "hidden": model.energy_cfg.hidden,
        "layers": model.energy_cfg.layers,
        "weights": {k: v.detach().cpu() for k, v in model.energies.state_dict().items()},
    }
    return save_diffusion(model, path, extra={"energies": part})


def read_energies(path: str | os.PathLike, obs_dim: int, act_dim: int) -> EnergySet:
    """The energy functions stored in an EDIS checkpoint; CheckpointError names the file and the problem."""
    path = Path(path)
    ckpt = read_checkpoint(path, "diffusion")
    part = ckpt.get("energies") if isinstance(ckpt, dict) else None
    if not isinstance(part, dict) or part.get("format") != ENERGY_FORMAT:
        raise CheckpointError(f"{path}: an 'edis' checkpoint without its energy functions ('energies' missing)")
    if part.get("version") != ENERGY_VERSION:
        raise CheckpointError(
            f"{path}: energy functions version {part.get('version')!r}, this cfdg reads {ENERGY_VERSION}; refit it"
        )
    try:
        energies = EnergySet(tuple(part["names"]), obs_dim, act_dim, int(part["hidden"]), int(part["layers"]))
        energies.load_state_dict(part["weights"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: inconsistent energy functions ({type(e).__name__}: {first})") from e
    return energies


def load_edis(path: str | os.PathLike, device: str | torch.device | None = None) -> EnergyGuidedModel:
    """An EDIS checkpoint: the diffusion model (refused if another variant's) and its energies."""
    model = load_diffusion(path, device, variant="edis")
    energies = read_energies(path, model.obs_dim, model.act_dim)
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(DiffusionModel) if f.init}
    cfg = model.cfg.edis
    return EnergyGuidedModel(**fields, energies=energies.to(model.device).requires_grad_(False).eval(), energy_cfg=cfg)


def previous_energies(path: str | os.PathLike | None, cfg: EdisConfig, obs_dim: int, act_dim: int) -> EnergySet | None:
    """Round k-1's energies to continue from (EDIS keeps them across refits); None if it has none.

    Round 0's placeholder (and a missing file) start the energies afresh; a previous EDIS model of
    another shape is refused in one line, as a warm-started denoiser of another shape is.
    """
    if path is None or not Path(path).is_file() or checkpoint_variant(path) != "edis":
        return None
    prev = read_energies(path, obs_dim, act_dim)
    mine = (tuple(cfg.energies), cfg.hidden, cfg.layers)
    net = next(iter(prev.nets.values())).net
    theirs = (tuple(prev.nets), net[0].out_features, (len(net) - 1) // 2)
    if mine != theirs:
        raise ConfigError(
            f"diffusion.edis.warm_start: the previous round's energies are (names, hidden, layers) {theirs}, "
            f"this fit {mine}"
        )
    return prev
