"""`cfdg quality`: JS divergences of a candidate store to a reference store, or `--dynamics`: the
simulator fidelity of any store (and, with `--training`, its memorisation ratio)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from cfdg.errors import ConfigError, StoreError
from cfdg.store import LABEL_OFFLINE, LABEL_ONLINE, Transitions, read_attrs, read_store

LABELS = {"offline": LABEL_OFFLINE, "online": LABEL_ONLINE}
JS_ROWS, DYNAMICS_ROWS = 20000, 2000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quality",
        help="Jensen-Shannon divergences (nats) of a candidate store to a reference store, "
        "or --dynamics: simulator fidelity of a store",
    )
    p.add_argument("--reference", help="store of real online transitions (JS mode)")
    p.add_argument("--candidate", help="store to compare (e.g. synthetic or offline) (JS mode)")
    p.add_argument(
        "--dynamics",
        metavar="STORE",
        help="replay STORE's rows in the MuJoCo simulator: next-state, reward and termination errors",
    )
    p.add_argument("--training", metavar="STORE", help="with --dynamics: also the memorisation ratio against STORE")
    p.add_argument("--held-out", metavar="STORE", help="with --training: real rows the model never saw")
    p.add_argument("--env", help="with --dynamics: env name when the store's env_id is not a MuJoCo env name")
    p.add_argument("--label", choices=sorted(LABELS), help="keep only rows of this class (synthetic stores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--max-rows", type=int, help=f"rows sampled per store (default {JS_ROWS}; {DYNAMICS_ROWS} with --dynamics)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.max_rows is not None and args.max_rows <= 0:
        raise ConfigError(f"--max-rows must be positive, got {args.max_rows}")
    if args.dynamics is not None:
        if args.reference or args.candidate:
            raise ConfigError("--dynamics STORE replaces --reference/--candidate; give one mode")
        result = _dynamics(args)
    else:
        if args.training or args.held_out or args.env:
            raise ConfigError("--training, --held-out and --env go with --dynamics STORE")
        if not (args.reference and args.candidate):
            raise ConfigError("give --reference and --candidate (JS divergences) or --dynamics STORE (fidelity)")
        result = _js(args)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def _labelled(path: str, label: str | None) -> Transitions:
    data, _ = read_store(path)
    if label is None:
        return data
    if data.labels is None:
        raise StoreError(f"{path}: --label {label} needs a synthetic store with labels")
    return data.take(np.flatnonzero(data.labels == LABELS[label]))


def _js(args: argparse.Namespace) -> dict:
    from cfdg.quality import js_divergences

    reference, _ = read_store(args.reference)
    candidate = _labelled(args.candidate, args.label)
    return js_divergences(reference, candidate, seed=args.seed, max_rows=args.max_rows or JS_ROWS)


def _dynamics(args: argparse.Namespace) -> dict:
    from cfdg.fidelity import simulator_fidelity
    from cfdg.quality import memorisation_ratio

    if args.held_out and not args.training:
        raise ConfigError("--held-out goes with --training")
    data = _labelled(args.dynamics, args.label)
    if not len(data):
        raise StoreError(f"{args.dynamics}: no rows{f' labelled {args.label}' if args.label else ''} to check")
    env = args.env or str(read_attrs(args.dynamics)["env_id"])
    rows = args.max_rows or DYNAMICS_ROWS
    out = {"fidelity": simulator_fidelity(data, env, max_rows=rows, seed=args.seed)}
    if args.training:
        training, _ = read_store(args.training)
        held_out = read_store(args.held_out)[0] if args.held_out else None
        out["memorisation"] = memorisation_ratio(data, training, held_out, max_rows=rows, seed=args.seed)
    return out
