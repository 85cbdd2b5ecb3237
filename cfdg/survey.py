"""What can be said about a store without reading its data, and checking a store against its card.

`survey` (behind `cfdg store info`) reads the attributes, the card, the arrays' metadata and the
chunk files' names and sizes, and lists every disagreement among them instead of stopping at the
first: counts.rows against the array shapes, the chunk manifest against the chunks a shape needs,
missing and zero-byte chunk files, the card against the attributes. Values (NaN, a label 2, a
truncated chunk) are not read: `cfdg store validate` does that. `verify_card` reads every value and
compares it with the card's row counts, label counts and array digests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfdg.card import CARD_KEY, ArrayDigests
from cfdg.errors import StoreError
from cfdg.store import (
    LABEL_ONLINE,
    MANIFEST,
    _array,
    _names,
    _open_group,
    expected_chunks,
    iter_store,
    read_attrs,
)

NOT_CHECKED = "data values not checked (NaN, labels, chunk contents): `cfdg store validate --deep` checks them"
_CARD_FIELDS = ("kind", "env_id", "source", "round", "seed", "code_version")


@dataclasses.dataclass
class Survey:
    """A store as its metadata shows it; `problems` are one-line disagreements, empty when all agree."""

    path: Path
    attrs: dict[str, Any]
    card: Mapping[str, Any] | None
    arrays: dict[str, dict[str, Any]]
    problems: list[str]

    def record(self) -> dict[str, Any]:
        """The JSON form (`cfdg store info --json`); the chunk manifest is summarised by `chunk_files`."""
        return {
            "path": str(self.path),
            "card": self.card,
            "attrs": self.attrs,
            "arrays": self.arrays,
            "problems": self.problems,
            "data_checked": False,
            "note": NOT_CHECKED,
        }


def _strip(path: Path, e: StoreError) -> str:
    text = str(e)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _chunk_files(array_dir: Path) -> dict[str, int]:
    """Chunk key ("c/0/0") -> file size in bytes, for every chunk file present."""
    root = array_dir / "c"
    if not root.is_dir():
        return {}
    return {p.relative_to(array_dir).as_posix(): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _first(keys: list[str], what: str) -> str:
    more = f" ({len(keys)} chunks)" if len(keys) > 1 else ""
    return f"chunk {keys[0]} {what}{more}"


def _array_problems(name: str, arr: Any, files: Mapping[str, int], manifest: Mapping | None) -> list[str]:
    expected = expected_chunks(arr.shape, arr.chunks)
    out = []
    missing = [k for k in expected if k not in files]
    if missing:
        out.append(f"array '{name}' {_first(missing, 'is missing')}")
    empty = [k for k in expected if files.get(k) == 0]
    if empty:
        out.append(f"array '{name}' {_first(empty, 'is empty (0 bytes)')}")
    beyond = sorted(set(files) - set(expected))
    if beyond:
        out.append(f"array '{name}' has {len(beyond)} chunk file(s) beyond its shape {list(arr.shape)} ({beyond[0]})")
    if manifest is not None:
        recorded = manifest.get(name)
        if not isinstance(recorded, Mapping) or sorted(recorded) != sorted(expected):
            count = len(recorded) if isinstance(recorded, Mapping) else recorded
            out.append(
                f"array '{name}' has shape {list(arr.shape)} ({len(expected)} chunks) but attribute "
                f"'{MANIFEST}' records {count!r}"
            )
    return out


def _shape_problems(attrs: Mapping[str, Any], arrays: Mapping[str, Mapping[str, Any]]) -> list[str]:
    out = []
    rows = {name: a["shape"][0] for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        out.append("arrays disagree on rows: " + ", ".join(f"{n} {r}" for n, r in rows.items()))
    counts = attrs["counts"]
    if "rewards" in rows and counts["rows"] != rows["rewards"]:
        out.append(f"attribute counts.rows is {counts['rows']}, arrays hold {rows['rewards']} rows")
    if "observations" in arrays and "next_observations" in arrays:
        w, wn = arrays["observations"]["shape"][1], arrays["next_observations"]["shape"][1]
        if w != wn:
            out.append(f"array 'next_observations' has width {wn}, 'observations' {w}")
    if attrs["kind"] == "synthetic" and counts["offline"] + counts["online"] != counts["rows"]:
        out.append(
            f"attribute counts has {counts['offline']} offline + {counts['online']} online labels, "
            f"but {counts['rows']} rows"
        )
    return out


def card_problems(card: Any, attrs: Mapping[str, Any], arrays: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Where the card disagrees with the attributes and the arrays' metadata (no data read)."""
    if not isinstance(card, Mapping):
        return [f"attribute '{CARD_KEY}' is {type(card).__name__}, expected a mapping"]
    out = []
    for key in _CARD_FIELDS:
        if card.get(key) != attrs.get(key):
            out.append(f"card says {key} {card.get(key)!r}, attribute says {attrs.get(key)!r}")
    counts = attrs["counts"]
    if card.get("rows") != counts["rows"]:
        out.append(f"card says {card.get('rows')!r} rows, attribute counts.rows is {counts['rows']}")
    if attrs["kind"] == "synthetic":
        want = {"offline": counts["offline"], "online": counts["online"]}
        if card.get("labels") != want:
            out.append(f"card says labels {card.get('labels')!r}, attribute counts says {want}")
    recorded = card.get("arrays") if isinstance(card.get("arrays"), Mapping) else {}
    if sorted(recorded) != sorted(arrays):
        out.append(f"card records arrays {sorted(recorded)}, the store holds {sorted(arrays)}")
    for name, a in arrays.items():
        rec = recorded.get(name)
        if isinstance(rec, Mapping) and (rec.get("shape") != a["shape"] or rec.get("dtype") != a["dtype"]):
            out.append(
                f"card records array '{name}' as {rec.get('dtype')} {rec.get('shape')}, it is {a['dtype']} {a['shape']}"
            )
    return out


def survey(path: str | Path) -> Survey:
    """Everything `cfdg store info` shows. A store that cannot be opened or whose attributes are
    malformed raises StoreError; any other disagreement is listed in `problems`."""
    path = Path(path)
    attrs = read_attrs(path)
    group = _open_group(path)
    problems: list[str] = []
    manifest = attrs.get(MANIFEST)
    if manifest is not None and not isinstance(manifest, Mapping):
        problems.append(f"attribute '{MANIFEST}' must be a mapping, got {type(manifest).__name__}")
        manifest = None
    arrays: dict[str, dict[str, Any]] = {}
    for name in _names(attrs):
        try:
            arr = _array(path, group, name)
        except StoreError as e:
            problems.append(_strip(path, e))
            continue
        files = _chunk_files(path / name)
        arrays[name] = {
            "shape": list(arr.shape),
            "dtype": str(arr.dtype),
            "chunks": list(arr.chunks),
            "chunk_files": len(files),
        }
        problems += _array_problems(name, arr, files, manifest)
    problems += _shape_problems(attrs, arrays)
    card = attrs.get(CARD_KEY)
    if card is not None:
        problems += card_problems(card, attrs, arrays)
    shown = {k: v for k, v in attrs.items() if k not in (MANIFEST, CARD_KEY)}
    return Survey(path, shown, card, dict(sorted(arrays.items())), problems)


def verify_card(path: str | Path) -> Mapping[str, Any]:
    """Read every value and check it against the card (rows, label counts, each array's sha256);
    StoreError names the first disagreement. Returns the card."""
    path = Path(path)
    found = survey(path)
    if found.problems:
        raise StoreError(f"{path}: {found.problems[0]}")
    card = found.card
    if card is None:
        raise StoreError(f"{path}: has no dataset card (written before cards); nothing to verify it against")
    digests, rows, online = ArrayDigests(), 0, 0
    for block in iter_store(path):
        digests.update(block.arrays())
        rows += len(block)
        if block.labels is not None:
            online += int(np.count_nonzero(block.labels == LABEL_ONLINE))
    if rows != card["rows"]:
        raise StoreError(f"{path}: holds {rows} rows, its card says {card['rows']}")
    if "labels" in card and card["labels"] != {"offline": rows - online, "online": online}:
        raise StoreError(
            f"{path}: holds {rows - online} offline / {online} online labels, its card says {card['labels']}"
        )
    for name, rec in sorted(card["arrays"].items()):
        if not isinstance(rec, Mapping) or digests.hexdigest(name) != rec.get("sha256"):
            raise StoreError(f"{path}: array '{name}' does not match the sha256 its card records (changed since)")
    return card
