"""Transition stores: one Zarr group per buffer of (s, a, r, s', terminal, timeout) rows.

The contract (DESIGN.md "Transition store"): float32 observations/actions/rewards, bool
terminals/timeouts, uint8 labels for synthetic stores, and provenance attributes without
wall-clock time, so the same inputs give byte-identical stores. Rows are chunked in fixed
blocks, so appending to a store whose length is a multiple of `chunk_rows` leaves the earlier
chunk files byte-identical and DVC's cache dedupes them across rounds.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

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

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise StoreError(f"store kind must be one of {KINDS}, got {self.kind!r}")


class StoreWriter:
    """Stream rows into a new store; it appears at `path` only after `close()` succeeds.

    Used as a context manager: an exception inside the block removes the temporary store
    and leaves whatever was at `path` untouched.
    """

    def __init__(
        self, path: str | os.PathLike, meta: StoreMeta, obs_dim: int, act_dim: int, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> None:
        if chunk_rows <= 0:
            raise StoreError(f"chunk_rows must be positive, got {chunk_rows}")
        self.path, self.meta, self.chunk_rows = Path(path), meta, chunk_rows
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
            self._arrays[name] = self._group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
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
        if batch.labels is not None:
            self._counts["online"] += int(batch.labels.sum())
            self._counts["offline"] += len(batch) - int(batch.labels.sum())
        self.rows += len(batch)

    def close(self) -> Path:
        meta = dataclasses.asdict(self.meta)
        counts: dict[str, int] = {"rows": self.rows}
        if self.with_labels:
            counts.update(self._counts)
        attrs = {"schema_version": SCHEMA_VERSION, **meta, "counts": counts, "chunk_rows": self.chunk_rows}
        # Round-trip through JSON so non-JSON params fail here, not in a reader.
        self._group.attrs.update(json.loads(json.dumps(attrs, sort_keys=True, allow_nan=False)))
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
    path: str | os.PathLike, data: Transitions, meta: StoreMeta, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Path:
    """Write `data` as a complete store at `path` (atomically)."""
    with StoreWriter(path, meta, data.obs_dim, data.act_dim, chunk_rows) as w:
        w.append(data)
    return Path(path)


def _open_group(path: Path) -> zarr.Group:
    if not path.exists():
        raise StoreError(f"{path}: store does not exist")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as e:  # zarr raises several types for broken metadata
        raise StoreError(f"{path}: not a readable Zarr group ({type(e).__name__}: {e})") from e


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Group attributes after checking the schema version and kind."""
    path = Path(path)
    attrs = dict(_open_group(path).attrs)
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema_version is {version!r}, this cfdg reads {SCHEMA_VERSION}")
    for key in ("kind", "env_id", "source", "round", "seed", "params", "inputs", "code_version", "counts"):
        if key not in attrs:
            raise StoreError(f"{path}: attribute '{key}' is missing")
    if attrs["kind"] not in KINDS:
        raise StoreError(f"{path}: attribute 'kind' is {attrs['kind']!r}, expected one of {KINDS}")
    return attrs


def read_store(path: str | os.PathLike) -> tuple[Transitions, dict[str, Any]]:
    """Load and fully validate a store: (transitions, attributes)."""
    path = Path(path)
    attrs = read_attrs(path)
    group = _open_group(path)
    names = list(ARRAYS) + (["labels"] if attrs["kind"] == "synthetic" else [])
    arrays = {}
    for name in names:
        try:
            arrays[name] = group[name][...]
        except KeyError:
            raise StoreError(f"{path}: missing array '{name}'") from None
        except Exception as e:
            raise StoreError(f"{path}: array '{name}' cannot be read ({type(e).__name__}: {e})") from e
    validate_arrays(arrays, str(path))
    rows = attrs["counts"].get("rows")
    if rows != arrays["rewards"].shape[0]:
        raise StoreError(f"{path}: attribute counts.rows is {rows}, arrays hold {arrays['rewards'].shape[0]} rows")
    return Transitions(**arrays), attrs


def iter_store(path: str | os.PathLike, batch_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[Transitions]:
    """Stream a store in row blocks (export of stores larger than memory)."""
    path = Path(path)
    attrs = read_attrs(path)
    group = _open_group(path)
    names = list(ARRAYS) + (["labels"] if attrs["kind"] == "synthetic" else [])
    n = group["rewards"].shape[0]
    for start in range(0, n, batch_rows):
        block = {name: group[name][start : start + batch_rows] for name in names}
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
    """A summary for `cfdg store info`: attributes plus array shapes and dtypes."""
    path = Path(path)
    attrs = read_attrs(path)
    group = _open_group(path)
    arrays = {}
    for name, arr in group.arrays():
        arrays[name] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "chunks": list(arr.chunks)}
    return {"path": str(path), "attrs": attrs, "arrays": dict(sorted(arrays.items()))}
