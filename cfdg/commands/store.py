"""`cfdg store info|validate|export`."""

from __future__ import annotations

import argparse
import json

from cfdg import store
from cfdg.commands.outputs import add_force, check_out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect, validate and export transition stores")
    ssub = p.add_subparsers(dest="store_command", required=True)

    q = ssub.add_parser("info", help="print a store's attributes and array shapes as JSON")
    q.add_argument("path")
    q.set_defaults(func=_info)

    q = ssub.add_parser("validate", help="exit 0 when valid; exit 2 with one line naming the problem")
    q.add_argument("path")
    q.add_argument("--deep", action="store_true", help="also check every chunk file against its recorded sha256")
    q.set_defaults(func=_validate)

    q = ssub.add_parser("export", help="export a store to D4RL HDF5 (or Minari)")
    q.add_argument("path")
    q.add_argument("--format", choices=["d4rl", "minari"], default="d4rl")
    q.add_argument("--out", required=True, help="output file (.hdf5) or Minari dataset directory")
    add_force(q)
    q.set_defaults(func=_export)


def _info(args: argparse.Namespace) -> int:
    print(json.dumps(store.info(args.path), indent=2, sort_keys=True))
    return 0


def _validate(args: argparse.Namespace) -> int:
    data, attrs = store.read_store(args.path, deep=args.deep)
    checked = "chunk digests checked" if store.MANIFEST in attrs else "no chunk digests recorded"
    checked = f", {checked}" if args.deep else ""
    dims = f"obs_dim {data.obs_dim}, act_dim {data.act_dim}"
    print(f"{args.path}: valid {attrs['kind']} store, {len(data)} rows, {dims}{checked}")
    return 0


def _export(args: argparse.Namespace) -> int:
    check_out(args.out, args.force, "file" if args.format == "d4rl" else "dir")
    store.read_attrs(args.path)  # a broken store fails before anything is written
    if args.format == "d4rl":
        from cfdg.d4rl import export_d4rl

        out = export_d4rl(args.path, args.out)
    else:
        from cfdg.minari_io import export_minari

        out = export_minari(args.path, args.out)
    print(out)
    return 0
