"""Dataset cards: what a store holds, what made it and how good it is, kept inside the store.

The card is the store's group attribute `card`, so `dvc import` / `dvc get` of the store alone
brings it and the store's digest covers it. It is written by the same atomic close that writes the
store (cfdg.store.StoreWriter) and holds no clock time: the same inputs give the same card.

Each array's `sha256` is over its values (little-endian, C order), not its chunk files, so it
survives a re-chunking and an export: a D4RL file carries the card and its arrays can be checked
against it after import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from cfdg.io import plain

CARD_KEY = "card"
CARD_VERSION = 1
# Attributes copied into the card as they are (the store's own provenance).
_COPIED = ("kind", "env_id", "source", "round", "seed", "code_version")


def _le_bytes(a: np.ndarray) -> np.ndarray:
    """The values as flat little-endian bytes (a view when possible; empty arrays included)."""
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return a.reshape(-1).view(np.uint8)


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's values (little-endian, C order): what the card records per array."""
    return hashlib.sha256(_le_bytes(a)).hexdigest()


class ArrayDigests:
    """Running sha256 of each array's values as row blocks arrive (a store is written and read in blocks)."""

    def __init__(self) -> None:
        self._h: dict[str, Any] = {}

    def update(self, arrays: Mapping[str, np.ndarray]) -> None:
        for name, a in arrays.items():
            self._h.setdefault(name, hashlib.sha256()).update(_le_bytes(a))

    def hexdigest(self, name: str) -> str:
        return self._h.get(name, hashlib.sha256()).hexdigest()


def build_card(
    attrs: Mapping[str, Any], arrays: Mapping[str, Mapping[str, Any]], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The card of a store from its attributes, its arrays ({name: {dtype, shape, sha256}}) and `extra`
    (generator settings, quality figures, a source's card: what only the writer knows)."""
    counts = attrs["counts"]
    card: dict[str, Any] = {"card_version": CARD_VERSION, **{k: attrs[k] for k in _COPIED}}
    card["rows"] = int(counts["rows"])
    if attrs["kind"] == "synthetic":
        card["labels"] = {"offline": int(counts["offline"]), "online": int(counts["online"])}
    shapes = {name: a["shape"] for name, a in arrays.items()}
    card["obs_dim"] = int(shapes["observations"][1])
    card["act_dim"] = int(shapes["actions"][1])
    card["settings"] = dict(attrs["params"])
    card["inputs"] = dict(attrs["inputs"])
    card["arrays"] = {name: dict(a) for name, a in sorted(arrays.items())}
    for key, value in (extra or {}).items():
        if key in card:
            raise ValueError(f"card: extra key {key!r} would overwrite the store's own field")
        card[key] = value
    return plain(card)


def quality_rows(quality: Mapping[str, Any]) -> list[tuple[str, str, float | None, float | None, str]]:
    """The round's quality figures for people: (measure, unit, generated, reference, what the reference is).

    JS divergences are the classifier estimates against the round's online data (the reference is the
    offline data's); simulator errors are the online-labelled generated rows' (the reference is the real
    online rows', ≈ 0 when the simulator matches); memorisation is a ratio of nearest-neighbour distances.
    """

    def get(*keys: str) -> float | None:
        node: Any = quality
        for k in keys:
            node = node.get(k) if isinstance(node, Mapping) else None
        return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None

    rows = []
    for part in ("state", "action", "transition"):
        gen, ref = get("generated_vs_online", part, "classifier"), get("offline_vs_online", part, "classifier")
        rows.append((f"JS {part} vs online", "nats (0..0.693)", gen, ref, "offline data"))
    for key, label, unit in (
        ("next_state_rel_error", "next-state error (sim)", "MSE / copy-s MSE"),
        ("reward_rel_error", "reward error (sim)", "MSE / Var(r_sim)"),
    ):
        rows.append((label, unit, get("fidelity", "generated", key), get("fidelity", "online", key), "real online"))
    ratio = get("memorisation", "ratio")  # the real rows' own ratio is 1 by definition
    rows.append(("memorisation", "NN-dist ratio (<<1 copies)", ratio, None if ratio is None else 1.0, "real held-out"))
    return rows


def imported_card(source_card: Any, arrays: Mapping[str, np.ndarray], where: str) -> dict[str, Any]:
    """Card fields of a store imported from an exported file: the exporting store's card, and which of
    its arrays no longer match it (empty: the rows are the ones the card describes)."""
    if source_card is None:
        return {}
    if not isinstance(source_card, Mapping) or not isinstance(source_card.get("arrays"), Mapping):
        raise ValueError(f"{where}: the card it carries is not a cfdg dataset card")
    recorded = source_card["arrays"]
    changed = sorted(
        name
        for name, a in arrays.items()
        if name in recorded and (recorded[name] or {}).get("sha256") != array_sha256(a)
    )
    return {"source_card": plain(source_card), "source_arrays_changed": changed}
