"""`cfdg agent pretrain|round`: offline pretraining and one online round from the shell.

Parameters come from an optional YAML file with sections `agent`, `pretrain`, `rollout` (the
params.yaml layout) and `--set section.key=value` overrides; metrics go to stdout or `--metrics`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from cfdg.errors import ConfigError
from cfdg.io import atomic_write_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="pretrain an agent offline or run one online round")
    asub = p.add_subparsers(dest="agent_command", required=True)

    q = asub.add_parser("pretrain", help="offline pretraining on a transition store")
    q.add_argument("offline_store", type=Path)
    q.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    q.add_argument("--seed", type=int, default=0)
    _common(q)
    q.set_defaults(func=_pretrain)

    q = asub.add_parser("round", help="one online fine-tuning round from a checkpoint")
    q.add_argument("checkpoint", type=Path)
    q.add_argument("offline_store", type=Path)
    q.add_argument("--online-store", type=Path, help="online store of the previous rounds")
    q.add_argument("--synthetic-store", type=Path, help="synthetic store of the previous round")
    q.add_argument("--round", type=int, required=True, dest="round_index")
    q.add_argument("--out", type=Path, required=True, help="checkpoint to write")
    q.add_argument("--out-online-store", type=Path, required=True)
    _common(q)
    q.set_defaults(func=_round)


def _common(q: argparse.ArgumentParser) -> None:
    q.add_argument("--config", type=Path, help="YAML with sections agent / pretrain / rollout")
    q.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override one parameter")
    q.add_argument("--metrics", type=Path, help="write metrics JSON here instead of stdout")
    q.add_argument("--no-progress", action="store_true")


def _sections(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    cfg: dict[str, Any] = {}
    if args.config is not None:
        try:
            cfg = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{args.config}: cannot read YAML ({e})") from e
        if not isinstance(cfg, dict):
            raise ConfigError(f"{args.config}: must hold a mapping of sections")
    out = {k: dict(cfg.get(k) or {}) for k in ("agent", "pretrain", "rollout")}
    for item in args.set:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in out:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION in {sorted(out)}")
        out[section][name] = yaml.safe_load(value)
    return out


def _emit(args: argparse.Namespace, metrics: dict[str, Any]) -> int:
    if args.metrics is not None:
        atomic_write_json(args.metrics, metrics)
    else:
        print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from cfdg.agents.config import PretrainConfig
    from cfdg.agents.registry import agent_config
    from cfdg.agents.train import pretrain
    from cfdg.config import from_mapping

    s = _sections(args)
    agent_cfg = agent_config(s["agent"], "agent")
    cfg = from_mapping(PretrainConfig, s["pretrain"], "pretrain")
    return _emit(args, pretrain(args.offline_store, agent_cfg, cfg, args.out, args.seed, not args.no_progress))


def _round(args: argparse.Namespace) -> int:
    from cfdg.agents.config import RolloutConfig
    from cfdg.agents.train import run_round
    from cfdg.config import from_mapping

    s = _sections(args)
    cfg = from_mapping(RolloutConfig, s["rollout"], "rollout")
    metrics = run_round(
        args.checkpoint,
        args.offline_store,
        args.online_store,
        args.synthetic_store,
        cfg,
        args.out,
        args.out_online_store,
        args.round_index,
        not args.no_progress,
        algo=s["agent"].get("algo"),
        apl_engine=s["agent"].get("apl_engine"),
    )
    return _emit(args, metrics)
