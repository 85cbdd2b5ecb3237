"""Stage `rollout@k`: online fine-tuning for one round's environment steps.

Reads round k-1 (agent, online store, synthetic store) and the offline store; writes the
agent checkpoint and the grown online store of round k. Empty stores (round 0) mean "none".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfdg import store
from cfdg.agents.config import RolloutConfig
from cfdg.agents.train import run_round
from cfdg.errors import ConfigError
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import score_fields, text_fields, write_metrics
from stages.provenance import config_dict, provenance
from stages.runner import progress_enabled, run_main


def _or_none(path: Path) -> Path | None:
    """An empty store is passed as None: 'no data yet', whatever the library does with 0 rows."""
    return path if int(store.read_attrs(path)["counts"]["rows"]) > 0 else None


def rollout_stage(
    prev_dir: Path, offline: Path, k: int, cfg: Any, out_dir: Path, progress: bool = True
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {
        "agent": prev_dir / layout.AGENT,
        "offline": offline,
        "online": prev_dir / layout.ONLINE,
        "synthetic": prev_dir / layout.SYNTHETIC,
    }
    metrics = run_round(
        inputs["agent"],
        offline,
        _or_none(inputs["online"]),
        _or_none(inputs["synthetic"]),
        cfg,
        out_dir / layout.AGENT,
        out_dir / layout.ONLINE,
        round_index=k,
        progress=progress,
    )
    recorded = {"rollout": config_dict(cfg)}
    about = text_fields(metrics)
    write_json(out_dir / "rollout.provenance.json", provenance(f"rollout@{k}", inputs, recorded, about))
    return {**dict(metrics), "round": k, **score_fields(metrics, env_steps=metrics["env_steps_total"])}


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> None:
        raw = params.read_params(args.params)
        k = args.round
        prev = params.rounds(raw, args.params).get(k)
        if prev is None:
            raise ConfigError(f"{args.params}: round {k} is not in the rounds table")
        out_dir = layout.round_dir(k)
        cfg = params.section(raw, "rollout", RolloutConfig, args.params)
        metrics = rollout_stage(layout.round_dir(prev), layout.OFFLINE, k, cfg, out_dir, progress_enabled())
        curves = {"eval": (metrics.get("eval") or [], "env_step", "normalized_score")}
        write_metrics(layout.stage_metrics_dir(k, "rollout"), metrics, f"{k}-rollout", curves=curves)

    return run_main("rollout", body, argv, rounds=True)


if __name__ == "__main__":
    raise SystemExit(main())
