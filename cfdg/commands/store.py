"""`cfdg store info|card|verify|validate|export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cfdg import store
from cfdg.commands.outputs import add_force, check_out
from cfdg.errors import StoreError
from cfdg.io import atomic_write_text


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="inspect, validate and export transition stores")
    ssub = p.add_subparsers(dest="store_command", required=True)

    q = ssub.add_parser(
        "info", help="print a store's dataset card and what its metadata shows (exit 2 when they disagree)"
    )
    q.add_argument("path")
    q.add_argument("--json", action="store_true", help="the full record as JSON: card, attributes, arrays, problems")
    q.set_defaults(func=_info)

    q = ssub.add_parser("card", help="write a store's dataset card as Markdown (Hugging Face / Minari form)")
    q.add_argument("path")
    q.add_argument("-o", "--out", help="write to this file (atomically) instead of stdout")
    add_force(q)
    q.set_defaults(func=_card)

    q = ssub.add_parser("verify", help="check the data against the store's card (rows, labels, array sha256)")
    q.add_argument("path")
    q.set_defaults(func=_verify)

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
    """Print all it can see; a disagreement makes it exit 2 with the first one on stderr."""
    from cfdg.card_text import render_info
    from cfdg.survey import survey

    found = survey(args.path)
    print(json.dumps(found.record(), indent=2, sort_keys=True) if args.json else render_info(found))
    if found.problems:
        more = f" (and {len(found.problems) - 1} more, listed above)" if len(found.problems) > 1 else ""
        raise StoreError(f"{args.path}: {found.problems[0]}{more}")
    return 0


def _card(args: argparse.Namespace) -> int:
    from cfdg.card_text import render_markdown
    from cfdg.survey import survey

    if args.out is not None:
        check_out(args.out, args.force, "file")
    found = survey(args.path)
    if found.problems:
        raise StoreError(f"{args.path}: {found.problems[0]}; `cfdg store info` lists what disagrees")
    if found.card is None:
        raise StoreError(f"{args.path}: has no dataset card (written before cards); `cfdg store info` shows it")
    text = render_markdown(found.card, Path(args.path).name)
    if args.out is None:
        print(text, end="")
    else:
        print(atomic_write_text(args.out, text))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from cfdg.survey import verify_card

    card = verify_card(args.path)
    labels = card.get("labels")
    split = f" ({labels['offline']} offline, {labels['online']} online)" if labels else ""
    print(f"{args.path}: matches its card: {card['rows']} rows{split}, {len(card['arrays'])} array sha256s")
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
