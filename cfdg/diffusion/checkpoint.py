"""Diffusion checkpoints: weights, EMA weights, normaliser, optimiser state, fit config, data dims.

The config is the DiffusionConfig that fitting used; no sampling knob is stored (those are
materialise's params), so a sampling change never needs a new checkpoint.

Only tensors and plain Python go in, so `torch.load(weights_only=True)` reads it back; the
write is atomic so a crash never leaves half a checkpoint where the next stage looks.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import torch

from cfdg.config import from_mapping
from cfdg.device import select_device
from cfdg.diffusion.config import DiffusionConfig, fit_record
from cfdg.diffusion.model import DiffusionModel, build_denoiser
from cfdg.diffusion.normaliser import Normaliser
from cfdg.diffusion.placeholder import FORMAT, VERSION
from cfdg.errors import CfdgError, CheckpointError
from cfdg.io import atomic_torch_save, read_checkpoint


def save_diffusion(model: DiffusionModel, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the checkpoint atomically; `extra` holds a variant's own parts (EDIS: its energies)."""
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "config": fit_record(model.cfg),
        "obs_dim": model.obs_dim,
        "act_dim": model.act_dim,
        "step": model.step,
        "weights": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "ema_weights": {k: v.detach().cpu() for k, v in model.ema.state_dict().items()},
        "normaliser": {"mean": torch.from_numpy(model.normaliser.mean), "std": torch.from_numpy(model.normaliser.std)},
        "optimizer": _to_cpu(model.optimizer_state),
        **(extra or {}),
    }
    return atomic_torch_save(path, ckpt)


def checkpoint_variant(path: str | os.PathLike) -> str:
    """The variant name a fit stage wrote (`none` for the placeholder): materialise needs no params for it.

    This module sits below the variant registry: whether the name is known is the registry's
    question (`registry.fitted_variant`).
    """
    path = Path(path)
    return _variant(path, _read(path))


def _read(path: Path) -> dict:
    """The checkpoint, its format and version checked."""
    ckpt = read_checkpoint(path, "diffusion")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a cfdg diffusion checkpoint (format {_get(ckpt, 'format')!r})")
    if ckpt.get("version") == VERSION - 1:  # written before fit_online_fraction had its name: same model
        config = ckpt.get("config")
        if isinstance(config, dict) and "batch_online_share" in config:
            config["fit_online_fraction"] = config.pop("batch_online_share")
        ckpt["version"] = VERSION
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {ckpt.get('version')!r}, this cfdg reads {VERSION}; refit it (dvc repro fit@k)"
        )
    return ckpt


def _variant(path: Path, ckpt: dict) -> str:
    """The variant, which the placeholder holds at the top level and a model in its config: where both
    are present they must agree, or the checkpoint would be read as one and run as the other."""
    config = ckpt.get("config")
    inner = config.get("variant") if isinstance(config, dict) else None
    outer = ckpt.get("variant")
    if outer is not None and inner is not None and outer != inner:
        raise CheckpointError(
            f"{path}: inconsistent diffusion checkpoint: variant {outer!r} but config.variant {inner!r}"
        )
    if outer == "none":
        return "none"
    if not isinstance(inner, str):
        raise CheckpointError(f"{path}: inconsistent diffusion checkpoint (no config.variant)")
    return inner


def checkpoint_summary(path: str | os.PathLike) -> dict[str, object]:
    """What a synthetic store's card says about its generator: variant, fit steps and the fit config."""
    variant = checkpoint_variant(path)  # checks format and version
    if variant == "none":
        return {"variant": "none"}
    ckpt = read_checkpoint(Path(path), "diffusion")
    return {"variant": variant, "fit_steps": int(ckpt.get("step", 0)), "config": dict(ckpt["config"])}


def _check_dims(path: Path, ckpt: dict) -> tuple[int, int]:
    """obs_dim / act_dim are positive integers, and the normaliser's mean and std are as wide as a row
    of them (obs, action, reward, next obs, terminal)."""
    dims = [ckpt.get("obs_dim"), ckpt.get("act_dim")]
    if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise CheckpointError(f"{path}: inconsistent diffusion checkpoint: obs_dim/act_dim are {dims}")
    obs_dim, act_dim = dims
    width = 2 * obs_dim + act_dim + 2
    norm = ckpt.get("normaliser")
    for key in ("mean", "std"):
        value = norm.get(key) if isinstance(norm, dict) else None
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        if shape != [width]:
            raise CheckpointError(
                f"{path}: inconsistent diffusion checkpoint: normaliser.{key} is {shape}, "
                f"obs_dim/act_dim {obs_dim}/{act_dim} make rows {width} wide"
            )
    return obs_dim, act_dim


def load_diffusion(
    path: str | os.PathLike, device: str | torch.device | None = None, variant: str | None = None
) -> DiffusionModel:
    """Read a checkpoint written by save_diffusion; CheckpointError names the file and the problem.

    With `variant`, a checkpoint fitted for another variant is refused (the variant's own loader
    passes its name); without, the diffusion model of any variant's checkpoint is read (warm start).
    """
    path = Path(path)
    ckpt = _read(path)
    if _variant(path, ckpt) == "none":
        raise CheckpointError(f"{path}: variant 'none' fitted no model; there is nothing to load")
    stored = ckpt["config"].get("variant") if isinstance(ckpt.get("config"), dict) else None
    if variant is not None and stored != variant:
        raise CheckpointError(f"{path}: holds a {stored!r} model, not the {variant!r} model asked for; refit it")
    obs_dim, act_dim = _check_dims(path, ckpt)
    try:
        cfg_map = dict(ckpt["config"])
        if device is not None:
            cfg_map["device"] = str(device)
        cfg = from_mapping(DiffusionConfig, cfg_map, "config")
        dev = select_device(cfg.device)
        net = build_denoiser(cfg, obs_dim, act_dim, seed=0)
        for key in ("weights", "ema_weights"):
            _check_shapes(path, key, net.state_dict(), ckpt[key], cfg)
        net.load_state_dict(ckpt["weights"])
        ema = copy.deepcopy(net)
        ema.load_state_dict(ckpt["ema_weights"])
        norm = Normaliser(ckpt["normaliser"]["mean"].numpy(), ckpt["normaliser"]["std"].numpy())
    except CheckpointError:
        raise  # already names the file
    except CfdgError as e:
        raise CheckpointError(f"{path}: {e}") from e
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: inconsistent diffusion checkpoint ({type(e).__name__}: {e})") from e
    return DiffusionModel(
        cfg=cfg,
        obs_dim=obs_dim,
        act_dim=act_dim,
        net=net.to(dev),
        ema=ema.requires_grad_(False).eval().to(dev),
        normaliser=Normaliser(np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32)),
        device=dev,
        optimizer_state=ckpt.get("optimizer"),
        step=int(ckpt.get("step", 0)),
    )


def check_dims(model: DiffusionModel, obs_dim: int, act_dim: int) -> None:
    """Refuse a model fitted on another environment's transitions."""
    if (model.obs_dim, model.act_dim) != (obs_dim, act_dim):
        raise CheckpointError(
            f"diffusion checkpoint models obs/act dims {model.obs_dim}/{model.act_dim}, data has {obs_dim}/{act_dim}"
        )


def _check_shapes(path: Path, key: str, want: dict, got: object, cfg: DiffusionConfig) -> None:
    """One line when the stored tensors do not fit the denoiser the stored config describes."""
    if not isinstance(got, dict):
        raise CheckpointError(f"{path}: '{key}' is a {type(got).__name__}, expected a state dict")
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise CheckpointError(
            f"{path}: '{key}' does not fit a width-{cfg.width} depth-{cfg.depth} denoiser "
            f"({len(missing)} tensor(s) missing, e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})"
        )
    bad = [n for n, t in want.items() if not isinstance(got[n], torch.Tensor) or tuple(got[n].shape) != tuple(t.shape)]
    if bad:
        first = got[bad[0]]
        shape = list(first.shape) if isinstance(first, torch.Tensor) else type(first).__name__
        raise CheckpointError(
            f"{path}: '{key}' does not fit a width-{cfg.width} depth-{cfg.depth} denoiser: {len(bad)} tensor(s) "
            f"of another shape, e.g. '{bad[0]}' is {shape}, the model needs {list(want[bad[0]].shape)}"
        )


def _get(obj: object, key: str) -> object:
    return obj.get(key) if isinstance(obj, dict) else type(obj).__name__


def _to_cpu(obj: object) -> object:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj
