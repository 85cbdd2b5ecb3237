"""Stage `fit@k`: fit the generator variant's model (the paper's: class-conditional, offline ∪ online).

The variant (cfdg/diffusion/variants/registry.py) says what it fits: `cfdg` labels each row with
the buffer it came from (paper 3.2), `synther` sees online data only, `joint` sees both without
labels; variant `none` fits nothing and writes a placeholder checkpoint so the DAG is the same.
Reads params `diffusion` (+ seed) only: what sampling does with the model is materialise's
business. `diffusion.warm_start` starts from round k-1's model (round 0 holds a no-model
placeholder, so round 1 starts from scratch).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfdg.diffusion.checkpoint import checkpoint_variant, load_diffusion
from cfdg.diffusion.config import DiffusionConfig
from cfdg.diffusion.placeholder import save_no_model
from cfdg.diffusion.train import fit_diffusion
from cfdg.diffusion.variants.registry import get_variant
from cfdg.store import read_store
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import write_metrics
from stages.provenance import config_dict, derive_seed, provenance
from stages.runner import progress_enabled, run_main


def fit_stage(
    offline: Path,
    online: Path,
    cfg: Any,
    seed: int,
    k: int,
    out_model: Path,
    progress: bool = True,
    prev_model: Path | None = None,
) -> dict[str, Any]:
    """Fit and save the model to `out_model`; returns the fit metrics.

    With `cfg.warm_start`, the fit starts from `prev_model` (round k-1's diffusion.pt) when that
    holds a model; round 1's previous model is round 0's placeholder, so round 1 starts from scratch.
    """
    out_model.parent.mkdir(parents=True, exist_ok=True)
    inputs = {"offline": offline, "online": online}
    variant = get_variant(cfg.variant)
    if not variant.fits_model:
        save_no_model(out_model)
        metrics: dict[str, Any] = {}
    else:
        init = None
        if cfg.warm_start and prev_model is not None and checkpoint_variant(prev_model) != "none":
            init = load_diffusion(prev_model, device=cfg.device)
            inputs["previous_diffusion"] = prev_model
        online_data, _ = read_store(online)
        offline_data = read_store(offline)[0] if "offline" in variant.trains_on else None
        model, metrics = fit_diffusion(
            offline_data, online_data, cfg, seed=derive_seed(seed, k, "fit"), progress=progress, init=init
        )
        model, extra = variant.fit_extras(
            model, offline_data, online_data, derive_seed(seed, k, "fit-extras"), None, prev_model, progress
        )
        metrics = {**metrics, **extra}
        variant.save(model, out_model)
    recorded = {"seed": seed, "diffusion": config_dict(cfg)}
    write_json(out_model.parent / "fit.provenance.json", provenance(f"fit@{k}", inputs, recorded))
    return {"round": k, **dict(metrics)}


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> None:
        raw = params.read_params(args.params)
        k = args.round
        out_dir = layout.round_dir(k)
        cfg = params.section(raw, "diffusion", DiffusionConfig, args.params)
        metrics = fit_stage(
            layout.OFFLINE,
            out_dir / layout.ONLINE,
            cfg,
            params.seed(raw, args.params),
            k,
            out_dir / layout.DIFFUSION,
            progress_enabled(),
            prev_model=layout.round_dir(k - 1) / layout.DIFFUSION,
        )
        write_metrics(layout.stage_metrics_dir(k, "fit"), metrics, f"{k}-fit")

    return run_main("fit", body, argv, rounds=True)


if __name__ == "__main__":
    raise SystemExit(main())
