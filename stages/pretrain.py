"""Stage `pretrain`: offline training of the agent; writes round 0.

Round 0 = the pretrained agent plus an empty online store, an empty synthetic store and a
no-model diffusion placeholder, so every round k reads `rounds/<k-1>/` the same way (no special
case for the first round; a warm-started fit@1 finds no model and starts from scratch).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfdg import store
from cfdg.agents.config import PretrainConfig
from cfdg.agents.registry import agent_config
from cfdg.agents.train import pretrain
from cfdg.diffusion.placeholder import save_no_model
from cfdg.store import StoreMeta
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import score_fields, text_fields, write_metrics
from stages.provenance import config_dict, input_digests, provenance
from stages.runner import progress_enabled, run_main
from stages.stores import empty_transitions, store_dims


def pretrain_stage(
    offline: Path, agent_cfg: Any, cfg: Any, seed: int, out_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Pretrain on `offline`, write `out_dir/{agent.pt, online.zarr, synthetic.zarr, diffusion.pt}`; returns metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = dict(pretrain(offline, agent_cfg, cfg, out_dir / layout.AGENT, seed=seed, progress=progress))
    attrs = store.read_attrs(offline)
    obs_dim, act_dim = store_dims(offline)
    inputs = input_digests({"offline": offline})
    for kind, name in (("online", layout.ONLINE), ("synthetic", layout.SYNTHETIC)):
        meta = StoreMeta(kind=kind, env_id=attrs["env_id"], source=attrs["source"], round=0, seed=seed, inputs=inputs)
        store.write_store(out_dir / name, empty_transitions(obs_dim, act_dim, kind == "synthetic"), meta)
    save_no_model(out_dir / layout.DIFFUSION)
    recorded = {"seed": seed, "agent": config_dict(agent_cfg), "pretrain": config_dict(cfg)}
    about = text_fields(metrics)
    write_json(out_dir / "pretrain.provenance.json", provenance("pretrain", {"offline": offline}, recorded, about))
    return {"round": 0, **metrics, **score_fields(metrics, env_steps=0)}


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> None:
        raw = params.read_params(args.params)
        out_dir = layout.round_dir(0)
        metrics = pretrain_stage(
            layout.OFFLINE,
            params.section(raw, "agent", agent_config, args.params),
            params.section(raw, "pretrain", PretrainConfig, args.params),
            params.seed(raw, args.params),
            out_dir,
            progress_enabled(),
        )
        curves = {"eval": (metrics.get("eval") or [], "step", "normalized_score")}
        write_metrics(layout.stage_metrics_dir(0, "pretrain"), metrics, "0-metrics", curves=curves)

    return run_main("pretrain", body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
