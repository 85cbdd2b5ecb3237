"""`cfdg dataset build|import`: make an offline store from a local build or a D4RL file."""

from __future__ import annotations

import argparse

import yaml

from cfdg.commands.outputs import add_force, check_out
from cfdg.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dataset", help="build a D4RL-style dataset or import a D4RL HDF5 file")
    dsub = p.add_subparsers(dest="dataset_command", required=True)

    q = dsub.add_parser("build", help="train a behaviour policy and collect a D4RL-style dataset")
    q.add_argument("--env", default="hopper", help="hopper, halfcheetah, walker2d or ant")
    q.add_argument("--kind", default="medium-replay", help="random, medium, medium-replay, expert, medium-expert")
    q.add_argument("--out", required=True, help="output store (.zarr directory)")
    q.add_argument("--card", help="dataset card JSON (default: beside the store, <out>.card.json)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any DatasetConfig field")
    q.add_argument("--no-progress", action="store_true")
    add_force(q)
    q.set_defaults(func=_build)

    q = dsub.add_parser("import", help="convert a D4RL HDF5 file or a local Minari dataset to a store")
    q.add_argument(
        "source",
        help="e.g. hopper-medium-replay-v2 (looked up in $D4RL_DATASET_DIR), a .hdf5 path, or a Minari id "
        "such as D4RL/antmaze/umaze-v1 (looked up in $MINARI_DATASETS_PATH, never downloaded)",
    )
    q.add_argument("--out", required=True)
    q.add_argument("--env", help="env when the name does not tell it")
    q.add_argument("--seed", type=int, default=0)
    add_force(q)
    q.set_defaults(func=_import)


def _overrides(pairs: list[str]) -> dict[str, object]:
    """`key=value` pairs with YAML values, so numbers and booleans arrive typed."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cfdg.config import from_mapping
    from cfdg.datasets.build import DatasetConfig, build_dataset

    out = Path(args.out)
    card_path = Path(args.card) if args.card else out.with_name(out.name + ".card.json")
    check_out(out, args.force, "dir")
    check_out(card_path, args.force, "file", "--card")
    mapping = {"env": args.env, "kind": args.kind, "seed": args.seed, **_overrides(args.set)}
    cfg = from_mapping(DatasetConfig, mapping, "dataset")
    card = build_dataset(cfg, out, card_path, progress=not args.no_progress)
    ret = card["returns"]
    print(f"store: {out}")
    print(f"card:  {card_path}")
    print(
        f"{card['env']}-{card['kind']}: {card['size']} transitions, {card['episodes']} episodes, "
        f"return mean {ret['mean']:.1f} (min {ret['min']:.1f}, max {ret['max']:.1f}), "
        f"normalised {ret['normalized_mean']:.1f}"
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from cfdg.sources import import_source
    from cfdg.store import read_attrs

    check_out(args.out, args.force, "dir")
    out = import_source(args.source, args.out, seed=args.seed, env=args.env)
    attrs = read_attrs(out)
    print(f"store: {out} ({attrs['counts']['rows']} transitions, env {attrs['env_id']}, from {attrs['source']})")
    return 0
