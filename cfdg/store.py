"""Transition stores: one Zarr group per buffer of (s, a, r, s', terminal, timeout) rows.

The contract: float32 observations/actions/rewards, bool terminals/timeouts, uint8 labels for
synthetic stores, and provenance attributes without wall-clock time, so the same inputs give
byte-identical stores. The attribute `card` is the store's dataset card (cfdg.card), written by
the same atomic close. Rows are chunked in fixed
blocks, so appending to a store whose length is a multiple of `chunk_rows` leaves the earlier
chunk files byte-identical and DVC's cache dedupes them across rounds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

from cfdg.card import CARD_KEY, ArrayDigests, build_card
from cfdg.errors import StoreError
from cfdg.io import atomic_dir, code_version

SCHEMA_VERSION = 1
KINDS = ("offline", "online", "synthetic")
Kind = Literal["offline", "online", "synthetic"]
LABEL_OFFLINE, LABEL_ONLINE = 0, 1
DEFAULT_CHUNK_ROWS = 16384

# name -> (dtype, rank); obs/next_obs are [N, obs_dim], actions [N, act_dim], the rest [N].
ARRAYS: dict[str, tuple[np.dtype, int]] = {
    "observations": (np.dtype(np.float32), 2),
    "actions": (np.dtype(np.float32), 2),
    "rewards": (np.dtype(np.float32), 1),
    "next_observations": (np.dtype(np.float32), 2),
    "terminals": (np.dtype(np.bool_), 1),
    "timeouts": (np.dtype(np.bool_), 1),
}
LABELS = ("labels", np.dtype(np.uint8))
# Group attribute: array name -> {chunk key ("c/0/0") -> sha256 of the chunk file}. Zarr reads a
# missing chunk as fill_value (zeros), so without this list a lost chunk would read as data.
MANIFEST = "chunk_sha256"


@dataclasses.dataclass(frozen=True)
class Transitions:
    """In-memory transitions; every array has N rows. `labels` only for synthetic data."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[1])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in ARRAYS}
        if self.labels is not None:
            out["labels"] = self.labels
        return out

    def take(self, index: np.ndarray | slice) -> Transitions:
        return Transitions(**{k: v[index] for k, v in self.arrays().items()})

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, Any], where: str = "transitions") -> Transitions:
        """Cast to the contract's dtypes and validate; the error names `where` and the array."""
        missing = [k for k in ARRAYS if k not in arrays]
        if missing:
            raise StoreError(f"{where}: missing array(s) {missing}")
        cast = {}
        for name, (dtype, _) in ARRAYS.items():
            with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # out-of-range values become inf: refused below
                cast[name] = np.asarray(arrays[name]).astype(dtype, copy=False)
        labels = arrays.get("labels")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.size and (labels.min() < 0 or labels.max() > LABEL_ONLINE):
                raise StoreError(f"{where}: array 'labels' must hold 0 (offline) or 1 (online)")
            cast["labels"] = labels.astype(np.uint8, copy=False)
        t = cls(**cast)
        validate_arrays(t.arrays(), where)
        return t

    @staticmethod
    def concat(parts: list[Transitions]) -> Transitions:
        keys = parts[0].arrays().keys()
        return Transitions(**{k: np.concatenate([p.arrays()[k] for p in parts]) for k in keys})


def validate_arrays(arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Check names, ranks, dtypes, row counts, matching obs dims, finiteness and labels."""
    n = None
    for name, (dtype, rank) in ARRAYS.items():
        if name not in arrays:
            raise StoreError(f"{where}: missing array '{name}'")
        a = arrays[name]
        if a.ndim != rank:
            raise StoreError(f"{where}: array '{name}' has rank {a.ndim}, expected {rank} (shape {a.shape})")
        if a.dtype != dtype:
            raise StoreError(f"{where}: array '{name}' has dtype {a.dtype}, expected {dtype}")
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise StoreError(f"{where}: array '{name}' has {a.shape[0]} rows, expected {n} like 'observations'")
        if dtype.kind == "f":
            bad = ~np.isfinite(a)
            if bad.any():
                row = int(np.argwhere(bad)[0][0])
                count = int(bad.sum())
                raise StoreError(f"{where}: array '{name}' has {count} non-finite value(s), first at row {row}")
    for name in ("observations", "actions"):
        if arrays[name].shape[1] == 0:
            raise StoreError(f"{where}: array '{name}' has width 0; rows need at least one value")
    if arrays["next_observations"].shape[1] != arrays["observations"].shape[1]:
        raise StoreError(
            f"{where}: array 'next_observations' has width {arrays['next_observations'].shape[1]}, "
            f"'observations' {arrays['observations'].shape[1]}"
        )
    if "labels" in arrays:
        lab = arrays["labels"]
        if lab.dtype != LABELS[1] or lab.ndim != 1 or lab.shape[0] != n:
            raise StoreError(f"{where}: array 'labels' must be uint8 [{n}], got {lab.dtype} {lab.shape}")
        if lab.size and lab.max() > LABEL_ONLINE:
            raise StoreError(f"{where}: array 'labels' holds {int(lab.max())}; allowed 0 (offline), 1 (online)")


@dataclasses.dataclass(frozen=True)
class StoreMeta:
    """Provenance written as group attributes. No timestamps: identical inputs, identical bytes."""

    kind: Kind
    env_id: str
    source: str
    round: int = 0
    seed: int = 0
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inputs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> sha256
    code_version: str = dataclasses.field(default_factory=code_version)
    # What only the writer knows, for the dataset card (cfdg.card): generator settings, a source's card.
    # It goes into the `card` attribute alone, not beside the other attributes.
    card: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StoreError(f"store kind must be one of {KINDS}, got {self.kind!r}")


# Called with the complete temporary store before it is renamed into place; what it returns joins
# the card. This is how the round's quality figures, measured on the store itself, end up inside it.
Annotate = Callable[[Path], Mapping[str, Any]]


class StoreWriter:
    """Stream rows into a new store; it appears at `path` only after `close()` succeeds.

    Used as a context manager: an exception inside the block (or in `close`, `annotate` included)
    removes the temporary store and leaves whatever was at `path` untouched.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        meta: StoreMeta,
        obs_dim: int,
        act_dim: int,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        annotate: Annotate | None = None,
    ) -> None:
        if chunk_rows <= 0:
            raise StoreError(f"chunk_rows must be positive, got {chunk_rows}")
        self.path, self.meta, self.chunk_rows = Path(path), meta, chunk_rows
        self._annotate = annotate
        self._digests = ArrayDigests()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.with_labels = meta.kind == "synthetic"
        self._ctx = atomic_dir(self.path)
        self._tmp = self._ctx.__enter__()
        self._group = zarr.open_group(str(self._tmp), mode="w", zarr_format=3)
        widths = {"observations": obs_dim, "next_observations": obs_dim, "actions": act_dim}
        names = dict(ARRAYS)
        if self.with_labels:
            names["labels"] = (LABELS[1], 1)
        self._arrays = {}
        for name, (dtype, rank) in names.items():
            shape = (0, widths[name]) if rank == 2 else (0,)
            chunks = (chunk_rows, widths[name]) if rank == 2 else (chunk_rows,)
            # Every chunk is written, even all-zero ones, so "a chunk file is missing" always means lost data.
            self._arrays[name] = self._group.create_array(
                name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, config={"write_empty_chunks": True}
            )
        self.rows = 0
        self._counts = {"offline": 0, "online": 0}
        self._closed = False

    def append(self, batch: Transitions) -> None:
        where = f"{self.path} (append at row {self.rows})"
        arrays = batch.arrays()
        validate_arrays(arrays, where)
        if batch.obs_dim != self.obs_dim or batch.act_dim != self.act_dim:
            raise StoreError(
                f"{where}: batch has obs/act dims {batch.obs_dim}/{batch.act_dim}, "
                f"store has {self.obs_dim}/{self.act_dim}"
            )
        if self.with_labels != (batch.labels is not None):
            raise StoreError(f"{where}: labels are required for synthetic stores and only there")
        for name, arr in self._arrays.items():
            arr.append(arrays[name])
        self._digests.update(arrays)
        if batch.labels is not None:
            self._counts["online"] += int(batch.labels.sum())
            self._counts["offline"] += len(batch) - int(batch.labels.sum())
        self.rows += len(batch)

    def close(self) -> Path:
        """Write the attributes and the card, then rename the store into place (on failure: remove it)."""
        try:
            meta = dataclasses.asdict(self.meta)
            extra = dict(meta.pop("card"))
            counts: dict[str, int] = {"rows": self.rows}
            if self.with_labels:
                counts.update(self._counts)
            attrs = {"schema_version": SCHEMA_VERSION, **meta, "counts": counts, "chunk_rows": self.chunk_rows}
            attrs[MANIFEST] = {name: _chunk_digests(self._tmp / name) for name in self._arrays}
            attrs = _json(attrs)  # non-JSON params fail here, not in a reader
            if self._annotate is not None:
                self._group.attrs.update(attrs)  # a readable store for `annotate` (no card yet)
                extra.update(self._annotate(self._tmp))
            records = {
                name: {"dtype": str(arr.dtype), "shape": list(arr.shape), "sha256": self._digests.hexdigest(name)}
                for name, arr in self._arrays.items()
            }
            attrs[CARD_KEY] = build_card(attrs, records, extra)
            self._group.attrs.put(_json(attrs))
        except BaseException as e:
            self.abort(e)
            raise
        self._closed = True
        self._ctx.__exit__(None, None, None)
        return self.path

    def abort(self, exc: BaseException | None = None) -> None:
        if not self._closed:
            self._closed = True
            err = exc or RuntimeError("aborted")
            try:
                self._ctx.__exit__(type(err), err, None)
            except BaseException as raised:
                if raised is not err:
                    raise

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.abort(exc)
        elif not self._closed:
            self.close()


def write_store(
    path: str | os.PathLike,
    data: Transitions,
    meta: StoreMeta,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    annotate: Annotate | None = None,
) -> Path:
    """Write `data` as a complete store at `path` (atomically)."""
    with StoreWriter(path, meta, data.obs_dim, data.act_dim, chunk_rows, annotate) as w:
        w.append(data)
    return Path(path)


def _json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Sorted keys, JSON types only, no NaN: the same attributes always serialise to the same bytes."""
    try:
        return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise StoreError(f"store attributes are not plain JSON ({e})") from e


def _chunk_digests(array_dir: Path) -> dict[str, str]:
    """sha256 of every chunk file of one array, keyed like Zarr's chunk keys ("c/3/0")."""
    root = array_dir / "c"
    if not root.is_dir():
        return {}
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(array_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def expected_chunks(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[str]:
    """The chunk keys a Zarr v3 array of `shape` in `chunks` blocks has ("c/i/j", default encoding)."""
    grid = [math.ceil(s / c) for s, c in zip(shape, chunks, strict=True)]
    if not grid or min(grid) == 0:
        return []
    keys = []
    for flat in range(math.prod(grid)):
        index = []
        for g in reversed(grid):
            flat, i = divmod(flat, g)
            index.append(str(i))
        keys.append("c/" + "/".join(reversed(index)))
    return keys


def _open_group(path: Path) -> zarr.Group:
    if not path.exists():
        raise StoreError(f"{path}: store does not exist")
    if not path.is_dir():
        raise StoreError(f"{path}: is a file; a store is a .zarr directory")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as e:  # zarr raises several types for broken metadata
        raise StoreError(f"{path}: not a readable Zarr group ({type(e).__name__}: {_short(e)})") from e


def _short(e: BaseException) -> str:
    """An exception's message on one line (library messages often span several), at most 200 characters."""
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


def _names(attrs: Mapping[str, Any]) -> list[str]:
    return list(ARRAYS) + (["labels"] if attrs["kind"] == "synthetic" else [])


def _contract(name: str) -> tuple[np.dtype, int]:
    return ARRAYS[name] if name in ARRAYS else (LABELS[1], 1)


def _array(path: Path, group: zarr.Group, name: str) -> zarr.Array:
    """Array `name`, its metadata checked against the contract (dtype, rank); errors name store and array."""
    try:
        arr = group[name]
    except KeyError:
        raise StoreError(f"{path}: missing array '{name}'") from None
    except Exception as e:
        raise StoreError(f"{path}: array '{name}' has unreadable metadata ({type(e).__name__}: {_short(e)})") from e
    if not isinstance(arr, zarr.Array):
        raise StoreError(f"{path}: '{name}' is a group, expected an array")
    dtype, rank = _contract(name)
    if arr.dtype != dtype:
        raise StoreError(f"{path}: array '{name}' has dtype {arr.dtype} in its metadata, expected {dtype}")
    if arr.ndim != rank:
        raise StoreError(f"{path}: array '{name}' has rank {arr.ndim} (shape {arr.shape}), expected {rank}")
    return arr


def check_chunks(path: str | os.PathLike, deep: bool = False) -> dict[str, zarr.Array]:
    """Check every array's layout and that each chunk file it needs exists (with `deep`, its sha256 too).

    A Zarr reader fills a missing chunk with zeros; this is what stops lost data from reading as
    data. Stores written before the manifest existed are checked against the shape alone.
    """
    path = Path(path)
    attrs = read_attrs(path)
    group = _open_group(path)
    manifest = attrs.get(MANIFEST)
    if manifest is not None and not isinstance(manifest, Mapping):
        raise StoreError(f"{path}: attribute '{MANIFEST}' must be a mapping, got {type(manifest).__name__}")
    arrays = {name: _array(path, group, name) for name in _names(attrs)}
    rows = arrays["rewards"].shape[0]
    for name, arr in arrays.items():
        if arr.shape[0] != rows:
            raise StoreError(f"{path}: array '{name}' has {arr.shape[0]} rows, 'rewards' has {rows}")
        expected = expected_chunks(arr.shape, arr.chunks)
        recorded = manifest.get(name) if manifest is not None else None
        if manifest is not None and (not isinstance(recorded, Mapping) or sorted(recorded) != sorted(expected)):
            count = len(recorded) if isinstance(recorded, Mapping) else recorded
            raise StoreError(
                f"{path}: array '{name}' has shape {list(arr.shape)} ({len(expected)} chunks) but attribute "
                f"'{MANIFEST}' records {count!r}"
            )
        for key in expected:
            chunk = path / name / key
            if not chunk.is_file():
                hint = "" if manifest is not None else " (store predates chunk manifests: rewrite it)"
                raise StoreError(f"{path}: array '{name}' chunk {key} is missing{hint}")
            if deep and recorded is not None:
                if hashlib.sha256(chunk.read_bytes()).hexdigest() != recorded[key]:
                    raise StoreError(f"{path}: array '{name}' chunk {key} does not match its recorded sha256")
    return arrays


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Group attributes after checking the schema version, kind and the types of the provenance keys."""
    path = Path(path)
    attrs = dict(_open_group(path).attrs)
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema_version is {version!r}, this cfdg reads {SCHEMA_VERSION}")
    types = {"kind": str, "env_id": str, "source": str, "round": int, "seed": int, "params": Mapping}
    types.update(inputs=Mapping, code_version=str, counts=Mapping)
    for key, tp in types.items():
        if key not in attrs:
            raise StoreError(f"{path}: attribute '{key}' is missing")
        value = attrs[key]
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise StoreError(f"{path}: attribute '{key}' is {value!r}, expected a {getattr(tp, '__name__', tp)}")
    if attrs["kind"] not in KINDS:
        raise StoreError(f"{path}: attribute 'kind' is {attrs['kind']!r}, expected one of {KINDS}")
    counts = attrs["counts"]
    wanted = ("rows", "offline", "online") if attrs["kind"] == "synthetic" else ("rows",)
    for key in wanted:
        if not _int(counts.get(key)) or counts[key] < 0:
            raise StoreError(f"{path}: attribute counts.{key} is {counts.get(key)!r}, expected a row count")
    return attrs


def _read_block(path: Path, arrays: Mapping[str, zarr.Array], rows: slice | None = None) -> dict[str, np.ndarray]:
    out = {}
    for name, arr in arrays.items():
        try:
            out[name] = arr[...] if rows is None else arr[rows]
        except Exception as e:  # a truncated or corrupted chunk fails to decode
            raise StoreError(f"{path}: array '{name}' cannot be read ({type(e).__name__}: {_short(e)})") from e
    return out


def read_store(path: str | os.PathLike, deep: bool = False) -> tuple[Transitions, dict[str, Any]]:
    """Load and fully validate a store: (transitions, attributes). `deep` also checks chunk digests."""
    path = Path(path)
    attrs = read_attrs(path)
    arrays = _read_block(path, check_chunks(path, deep))
    validate_arrays(arrays, str(path))
    rows = attrs["counts"]["rows"]
    if rows != arrays["rewards"].shape[0]:
        raise StoreError(f"{path}: attribute counts.rows is {rows}, arrays hold {arrays['rewards'].shape[0]} rows")
    return Transitions(**arrays), attrs


def iter_store(path: str | os.PathLike, batch_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Transitions]:
    """Stream a store in row blocks (export of stores larger than memory)."""
    path = Path(path)
    attrs = read_attrs(path)
    arrays = check_chunks(path)
    n = arrays["rewards"].shape[0]
    if attrs["counts"]["rows"] != n:
        raise StoreError(f"{path}: attribute counts.rows is {attrs['counts']['rows']}, arrays hold {n} rows")
    for start in range(0, n, batch_rows):
        block = _read_block(path, arrays, slice(start, start + batch_rows))
        validate_arrays(block, f"{path} rows {start}:{start + batch_rows}")
        yield Transitions(**block)


def append_store(src: str | os.PathLike, new: Transitions, dst: str | os.PathLike, meta: StoreMeta) -> Path:
    """Write `dst` = rows of `src` followed by `new`, keeping src's chunking.

    When src's length is a multiple of its chunk_rows, the chunk files of src reappear
    unchanged in dst (same bytes, same names), which is what lets DVC dedupe rounds.
    """
    old, attrs = read_store(src)
    chunk_rows = int(attrs.get("chunk_rows", DEFAULT_CHUNK_ROWS))
    return write_store(dst, Transitions.concat([old, new]), meta, chunk_rows)


def info(path: str | os.PathLike) -> dict[str, Any]:
    """A summary for `cfdg store info`: attributes plus array shapes and dtypes (layout and chunks checked)."""
    path = Path(path)
    attrs = read_attrs(path)
    arrays = {
        name: {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks)}
        for name, arr in check_chunks(path).items()
    }
    shown = {k: v for k, v in attrs.items() if k != MANIFEST}
    return {"path": str(path), "attrs": shown, "arrays": dict(sorted(arrays.items()))}
