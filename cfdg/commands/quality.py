"""`cfdg quality`: JS divergences between a reference store (real online data) and a candidate."""

from __future__ import annotations

import argparse
import json

import numpy as np

from cfdg.errors import StoreError
from cfdg.store import LABEL_OFFLINE, LABEL_ONLINE, read_store

LABELS = {"offline": LABEL_OFFLINE, "online": LABEL_ONLINE}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quality", help="Jensen-Shannon divergences (nats) of a candidate store to a reference store")
    p.add_argument("--reference", required=True, help="store of real online transitions")
    p.add_argument("--candidate", required=True, help="store to compare (e.g. synthetic or offline)")
    p.add_argument("--label", choices=sorted(LABELS), help="keep only candidate rows of this class (synthetic stores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rows", type=int, default=20000)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cfdg.quality import js_divergences

    reference, _ = read_store(args.reference)
    candidate, _ = read_store(args.candidate)
    if args.label is not None:
        if candidate.labels is None:
            raise StoreError(f"{args.candidate}: --label {args.label} needs a synthetic store with labels")
        candidate = candidate.take(np.flatnonzero(candidate.labels == LABELS[args.label]))
    result = js_divergences(reference, candidate, seed=args.seed, max_rows=args.max_rows)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0
