"""Stage `fit@k`: fit the generator variant's model (the paper's: class-conditional, offline ∪ online).

The variant, resolved here once from `diffusion.variant` (cfdg/diffusion/variants/registry.py) and
passed down as an object, says what it fits: `cfdg` labels each row with
the buffer it came from (paper 3.2), `synther` sees online data only, `joint` sees both without
labels; variant `none` fits nothing and writes a placeholder checkpoint so the DAG is the same.
Reads params `diffusion` (+ seed) only: what sampling does with the model is materialise's
business. `diffusion.warm_start` starts from round k-1's model (round 0 holds a no-model
placeholder, so round 1 starts from scratch). A variant that learns from the current policy
(`edis`: its policy energy) also reads the round's agent, rounds/k/agent.pt.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cfdg.device import resolve_precision, select_device
from cfdg.diffusion.checkpoint import checkpoint_variant, load_diffusion
from cfdg.diffusion.config import DiffusionConfig, fit_record
from cfdg.diffusion.placeholder import save_no_model
from cfdg.diffusion.variants.base import Policy
from cfdg.diffusion.variants.registry import get_variant
from cfdg.errors import ConfigError
from cfdg.store import read_store
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import write_metrics
from stages.provenance import derive_seed, provenance
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
    agent: Path | None = None,
) -> dict[str, Any]:
    """Fit and save the model to `out_model`; returns the fit metrics.

    With `cfg.warm_start`, the fit starts from `prev_model` (round k-1's diffusion.pt) when that
    holds a model; round 1's previous model is round 0's placeholder, so round 1 starts from scratch.
    `agent` (round k's agent.pt) is read only by a variant that needs the current policy.
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
        policy = None
        if variant.needs_policy:
            if agent is None:
                raise ConfigError(f"diffusion.variant {cfg.variant!r}: fit@{k} needs the round's agent.pt (none given)")
            policy = round_policy(agent, derive_seed(seed, k, "fit-policy"))
            inputs["agent"] = agent
        online_data, _ = read_store(online)
        offline_data = read_store(offline)[0] if "offline" in variant.trains_on else None
        model, metrics = variant.fit(
            offline_data, online_data, cfg, seed=derive_seed(seed, k, "fit"), progress=progress, init=init
        )
        model, extra = variant.fit_extras(
            model, offline_data, online_data, derive_seed(seed, k, "fit-extras"), policy, prev_model, progress
        )
        metrics = {**metrics, **extra}
        variant.save(model, out_model)
    # `auto` precision depends on the machine: say what it was here
    precision = resolve_precision(cfg.precision, select_device(cfg.device))
    recorded = {"seed": seed, "diffusion": fit_record(cfg), "precision": precision}
    write_json(out_model.parent / "fit.provenance.json", provenance(f"fit@{k}", inputs, recorded))
    return {"round": k, **dict(metrics)}


def round_policy(agent: Path, seed: int) -> Policy:
    """The round's agent as states -> actions: its exploring policy, the one that collected the online rows.

    One state at a time: every agent's `act` takes one (PEX chooses between its policies per state).
    """
    from cfdg.agents.checkpoint import load_checkpoint
    from cfdg.agents.registry import agent_from_checkpoint

    actor = agent_from_checkpoint(load_checkpoint(agent), agent)
    gen = torch.Generator().manual_seed(seed)

    def act(states: np.ndarray) -> np.ndarray:
        return np.stack([actor.act(s, "explore", gen) for s in states]).astype(np.float32)

    return act


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
            agent=out_dir / layout.AGENT,
        )
        write_metrics(layout.stage_metrics_dir(k, "fit"), metrics, f"{k}-fit")

    return run_main("fit", body, argv, rounds=True)


if __name__ == "__main__":
    raise SystemExit(main())
