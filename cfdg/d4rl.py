"""D4RL HDF5 files in and out of transition stores.

Reading follows D4RL's `qlearning_dataset` (d4rl/__init__.py), so that a store made from a
real D4RL file holds the same rows that published offline-RL numbers were trained on:

- next_observations[i] = observations[i + 1], even when the file stores `next_observations`
  (qlearning_dataset ignores that key);
- a row with `timeouts[i]` set is dropped (its successor in the file starts a new episode), and
  so is the file's last row (it has no successor); terminal rows are kept, and as in D4RL their
  derived s' is the next episode's first observation (harmless for TD targets, masked by the terminal).

Files written by `export_d4rl` carry `metadata` attribute `cfdg_version` and are read row for
row instead (their `next_observations` are exact), so store -> HDF5 -> store loses nothing. They
also carry the store's dataset card (`metadata` attribute `card`, JSON); importing such a file
records it as the new store's `source_card`.
`next_obs="derive"` or `"file"` picks either rule explicitly.

Timeouts of a derived dataset mark the kept row just before a dropped one (unless it is a
terminal): the episode's rows end there while its next observation is still valid, which is
what `timeouts` means in every cfdg store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from cfdg import __version__
from cfdg.card import CARD_KEY, imported_card
from cfdg.envs import check_layout, env_name
from cfdg.errors import CfdgError, DatasetError, warn
from cfdg.io import atomic_file, digest
from cfdg.store import StoreMeta, Transitions, iter_store, read_attrs, write_store

NextObs = Literal["auto", "derive", "file"]
# key -> rank; all are numeric, terminals/timeouts hold 0/1.
REQUIRED = {"observations": 2, "actions": 2, "rewards": 1, "terminals": 1, "timeouts": 1}
OPTIONAL = {"next_observations": 2, "labels": 1}
FLAGS = ("terminals", "timeouts", "labels")
EXPORT_MARK = "cfdg_version"
ENV_KEYS = ("env_id", "env", "env_name")  # where a file's `metadata` may name its env (attribute or scalar array)
IGNORED = "_ignored"  # key of read_metadata's result: what in `metadata` could not be read, one line


def read_metadata(f: h5py.File, path: Path) -> dict[str, object]:
    """The `metadata` group's attributes, plus any scalar env-naming array in it (ENV_KEYS).

    Never fails on it and never drops it silently: what cannot be read (a `metadata` that is an
    array, an attribute h5py cannot decode, an env entry that is not one name) is described under
    IGNORED, which the importer prints as a warning and records in the store.
    """
    node = _get(f, "metadata")
    if node is None:
        return {}
    if not isinstance(node, h5py.Group):
        what = f"an array of shape {list(node.shape or ())}" if isinstance(node, h5py.Dataset) else "unreadable"
        return {IGNORED: f"'metadata' is {what}, not a group; ignored"}
    meta: dict[str, object] = {}
    problems: list[str] = []
    for key in node.attrs:
        try:
            meta[key] = node.attrs[key]
        except Exception as e:  # h5py cannot decode some attribute types
            problems.append(f"attribute metadata.{key} cannot be read ({type(e).__name__})")
    for key in ENV_KEYS:
        item = _get(node, key)
        if isinstance(item, h5py.Dataset) and key not in meta:
            try:
                meta[key] = item[()]
            except Exception as e:
                problems.append(f"array metadata/{key} cannot be read ({type(e).__name__})")
    for key in ENV_KEYS:
        if key in meta and _text(meta[key]) is None:
            value = np.asarray(meta.pop(key))
            problems.append(f"metadata {key} is {value.dtype} {list(value.shape)}, not an env name")
    if problems:
        meta[IGNORED] = "; ".join(problems) + "; ignored"
    return meta


def _get(group: h5py.Group, key: str) -> object:
    """`group[key]`, or None when it is absent or cannot be opened (a damaged link)."""
    try:
        return group.get(key)
    except Exception:
        return None


def _text(value: object) -> str | None:
    """A metadata value as one name (str, bytes or a 0-d string array), else None."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        try:
            value = bytes(value).decode()
        except UnicodeDecodeError:
            return None
    return str(value) if isinstance(value, str) and value.strip() else None


def metadata_env(meta: dict[str, object]) -> tuple[str, str] | None:
    """(key, name) of the env the file's metadata names, if it names one."""
    for key in ENV_KEYS:
        if key in meta:
            return key, str(_text(meta[key]))
    return None


def _check_array(path: Path, key: str, a: np.ndarray, rank: int, offset: int = 0) -> np.ndarray:
    """Dtype, rank, finiteness and flag values of one array (or a block of it starting at row `offset`);
    returns it with [N, 1] squeezed to [N]."""
    if a.dtype.kind not in "biuf":
        raise DatasetError(f"{path}: key '{key}' has non-numeric dtype {a.dtype}")
    if rank == 1 and a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != rank:
        raise DatasetError(f"{path}: key '{key}' has rank {a.ndim} (shape {a.shape}), expected {rank}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = ~np.isfinite(a)
        row = offset + int(np.argwhere(bad)[0][0])
        raise DatasetError(f"{path}: key '{key}' has {int(bad.sum())} NaN/inf value(s), first at row {row}")
    if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
        big = np.abs(a) > np.finfo(np.float32).max  # would become inf in the float32 store
        if big.any():
            row = offset + int(np.argwhere(big)[0][0])
            raise DatasetError(
                f"{path}: key '{key}' has {int(big.sum())} value(s) beyond float32 range, first at row {row}"
            )
    if key in FLAGS and a.size and not np.isin(a, (0, 1)).all():
        row = offset + int(np.argwhere(~np.isin(a, (0, 1)))[0][0])
        raise DatasetError(f"{path}: key '{key}' must hold only 0/1 (or bool) values; row {row} does not")
    return a


def _open(path: Path) -> h5py.File:
    """The file opened read-only; one line naming it when it is missing, a directory or not HDF5."""
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, expected a D4RL HDF5 file")
    if not path.is_file():
        raise DatasetError(f"{path}: file does not exist")
    try:
        return h5py.File(path, "r")
    except Exception as e:  # h5py raises OSError for non-HDF5 and truncated files
        raise DatasetError(f"{path}: not a readable HDF5 file ({type(e).__name__}: {e})") from e


CHECK_BLOCK = 1 << 16  # rows per block of inspect_d4rl's pass over the values


def inspect_d4rl(source: str | os.PathLike) -> Path:
    """Refuse now what importing `source` would refuse, without writing anything: D4RL's keys, ranks,
    widths and matching row counts, then one pass over the values in blocks (NaN/inf, float32 range,
    flags 0/1) and the env its metadata or name tells, laid out as that env's rows. `cfdg check` runs
    this before any stage, so a bad source fails before `dvc repro` removes the dataset stage's outputs.
    Not checked: the rows left after dropping timeouts (the import counts them). Returns the file's path.
    """
    path = _resolve(source)
    with _open(path) as f:
        nodes: dict[str, tuple[h5py.Dataset, int]] = {}
        for key, rank in {**REQUIRED, **OPTIONAL}.items():
            node = _get(f, key)
            if node is None:
                if key in REQUIRED:
                    raise DatasetError(f"{path}: missing key '{key}' (D4RL files hold {sorted(REQUIRED)})")
                continue
            if not isinstance(node, h5py.Dataset):
                raise DatasetError(f"{path}: key '{key}' is a group, expected an array")
            shape = node.shape or ()
            squeezed = len(shape) - 1 if rank == 1 and len(shape) == 2 and shape[1] == 1 else len(shape)
            if squeezed != rank or node.dtype.kind not in "biuf":
                raise DatasetError(f"{path}: key '{key}' is {node.dtype} {shape}, expected a numeric rank-{rank} array")
            if rank == 2 and shape[1] == 0:
                raise DatasetError(f"{path}: key '{key}' has width 0 (shape {shape}); rows need at least one value")
            nodes[key] = node, rank
        rows = {key: node.shape[0] for key, (node, _) in nodes.items()}
        if len(set(rows.values())) > 1:
            raise DatasetError(f"{path}: keys have different row counts {rows}")
        obs_dim, act_dim = nodes["observations"][0].shape[1], nodes["actions"][0].shape[1]
        if "next_observations" in nodes and nodes["next_observations"][0].shape[1] != obs_dim:
            width = nodes["next_observations"][0].shape[1]
            raise DatasetError(f"{path}: key 'next_observations' has width {width}, 'observations' {obs_dim}")
        n = rows["observations"]
        if n < 2:
            raise DatasetError(f"{path}: holds {n} row(s); a dataset needs at least 2")
        for key, (node, rank) in nodes.items():
            for start in range(0, n, CHECK_BLOCK):
                try:
                    block = np.asarray(node[start : start + CHECK_BLOCK])
                except Exception as e:  # a truncated file can open but fail on read
                    raise DatasetError(f"{path}: key '{key}' cannot be read ({type(e).__name__}: {e})") from e
                _check_array(path, key, block, rank, start)
        meta = read_metadata(f, path)
    if IGNORED in meta:
        warn(f"{path}: {meta[IGNORED]}")
    env = _env_of(path, str(source), meta, None)
    check_layout(env, obs_dim, act_dim, path)
    return path


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, object]]:
    """Every known key as a checked array, plus the `metadata` group's attributes."""
    with _open(path) as f:
        arrays: dict[str, np.ndarray] = {}
        for key, rank in {**REQUIRED, **OPTIONAL}.items():
            if key not in f:
                if key in REQUIRED:
                    raise DatasetError(f"{path}: missing key '{key}' (D4RL files hold {sorted(REQUIRED)})")
                continue
            node = f[key]
            if not isinstance(node, h5py.Dataset):
                raise DatasetError(f"{path}: key '{key}' is a group, expected an array")
            try:
                raw = node[()]
            except Exception as e:  # a truncated file can open but fail on read
                raise DatasetError(f"{path}: key '{key}' cannot be read ({type(e).__name__}: {e})") from e
            arrays[key] = _check_array(path, key, np.asarray(raw), rank)
        meta = read_metadata(f, path)
    n = arrays["observations"].shape[0]
    for key, a in arrays.items():
        if a.shape[0] != n:
            raise DatasetError(f"{path}: key '{key}' has {a.shape[0]} rows, 'observations' has {n}")
    if n < 2:
        raise DatasetError(f"{path}: holds {n} row(s); a dataset needs at least 2")
    if "next_observations" in arrays and arrays["next_observations"].shape[1] != arrays["observations"].shape[1]:
        raise DatasetError(
            f"{path}: key 'next_observations' has width {arrays['next_observations'].shape[1]}, "
            f"'observations' {arrays['observations'].shape[1]}"
        )
    return arrays, meta


def _derive(a: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """qlearning_dataset's rows: drop timeout rows and the last row; s' = next row's s."""
    n = a["rewards"].shape[0]
    timeouts = a["timeouts"].astype(bool)
    terminals = a["terminals"].astype(bool)
    keep = np.flatnonzero(~timeouts[: n - 1])
    dropped = np.ones(n, bool)  # dropped[i]: file row i is not kept (row n-1 never is)
    dropped[keep] = False
    return {
        "observations": a["observations"][keep],
        "actions": a["actions"][keep],
        "rewards": a["rewards"][keep],
        "next_observations": a["observations"][keep + 1],
        "terminals": terminals[keep],
        "timeouts": dropped[keep + 1] & ~terminals[keep],
    }


def load_d4rl_hdf5(path: str | os.PathLike, next_obs: NextObs = "auto") -> Transitions:
    """Read a D4RL HDF5 file as transitions (see the module docstring for which rows are kept).

    Extra keys (`infos/*`, `metadata/*`) are ignored; `labels` is kept when present and read
    row for row. Raises DatasetError naming the file and key for any malformed input.
    """
    return _load(Path(path), next_obs)[0]


def _load(path: Path, next_obs: NextObs) -> tuple[Transitions, dict[str, object]]:
    arrays, meta = _read(path)
    if next_obs == "auto":
        next_obs = "file" if EXPORT_MARK in meta and "next_observations" in arrays else "derive"
    if next_obs == "file":
        if "next_observations" not in arrays:
            raise DatasetError(f"{path}: missing key 'next_observations' (needed with next_obs='file')")
        rows = {k: arrays[k] for k in (*REQUIRED, "next_observations") if k in arrays}
        if "labels" in arrays:
            rows["labels"] = arrays["labels"]
    elif next_obs == "derive":
        rows = _derive(arrays)
        if not len(rows["rewards"]):
            raise DatasetError(f"{path}: no rows left after dropping timeout rows and the last row")
    else:
        raise DatasetError(f"next_obs must be 'auto', 'derive' or 'file', got {next_obs!r}")
    try:
        return Transitions.from_arrays(rows, where=str(path)), meta
    except CfdgError as e:
        raise DatasetError(str(e)) from e


def _d4rl_dirs() -> list[Path]:
    env = os.environ.get("D4RL_DATASET_DIR")
    return [Path(env).expanduser()] if env else [Path("~/.d4rl/datasets").expanduser()]


def find_d4rl_file(name: str) -> Path:
    """Path of D4RL dataset `name` (e.g. `hopper-medium-replay-v2`) where D4RL saves downloads.

    D4RL names files after their URLs, `hopper_medium_replay-v2.hdf5`; `<name>.hdf5` is accepted too.
    Looks in $D4RL_DATASET_DIR when set, else ~/.d4rl/datasets (as D4RL does).
    """
    base, sep, version = name.rpartition("-")
    url_style = f"{base.replace('-', '_')}-{version}" if sep else name.replace("-", "_")
    candidates = [d / f for d in _d4rl_dirs() for f in dict.fromkeys((f"{url_style}.hdf5", f"{name}.hdf5"))]
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"D4RL dataset {name!r} not found; looked for {looked} (set D4RL_DATASET_DIR to the folder holding it)"
    )


def _resolve(source: str | os.PathLike) -> Path:
    s = str(source)
    if isinstance(source, os.PathLike) or s.endswith((".hdf5", ".h5")) or os.sep in s or Path(s).exists():
        return Path(source)
    return find_d4rl_file(s)


def _env_of(path: Path, source: str, meta: dict[str, object], env: str | None) -> str:
    """Env from the caller, else the file's metadata, else the D4RL name or file stem.

    A file whose metadata names an env other than the caller's is refused: one of them is wrong.
    """
    named = metadata_env(meta)
    if env is not None:
        env = env_name(env)
        if named is not None:
            key, value = named
            try:
                same = env_name(value) == env
            except CfdgError:
                same = False
            if not same:
                raise DatasetError(
                    f"{path}: metadata {key} names env {value!r}, not {env!r} (--env); "
                    "import it with the env it was recorded from, or fix the file's metadata"
                )
        return env
    if named is not None:
        key, value = named
        try:
            return env_name(value)
        except CfdgError as e:
            raise DatasetError(f"{path}: metadata {key} {value!r}: {e}") from e
    for guess in (source, path.stem):
        for key in (Path(guess).name.replace("_", "-"), Path(guess).name.split("-")[0].split("_")[0]):
            try:  # the whole name first: AntMaze names carry the maze (antmaze-large-play-v2)
                return env_name(key)
            except CfdgError:
                continue
    raise DatasetError(
        f"{path}: cannot tell the env from the name {source!r}; pass --env (e.g. --env hopper) "
        "or name the file after its D4RL dataset (e.g. hopper-medium-v2.hdf5)"
    )


def import_d4rl(source: str | os.PathLike, out: str | os.PathLike, seed: int = 0, env: str | None = None) -> Path:
    """Write the offline store `out` from a D4RL HDF5 path or D4RL dataset name.

    Labels in the file (a synthetic export) are not carried over: the result is an offline store.
    """
    path = _resolve(source)
    data, meta = _load(path, "auto")
    name = str(source)
    env_id = _env_of(path, name, meta, env)
    check_layout(env_id, data.obs_dim, data.act_dim, path)
    card = _source_card(path, meta, data)
    import_params: dict[str, object] = {"format": "d4rl"}
    if IGNORED in meta:
        import_params["metadata_ignored"] = str(meta[IGNORED])
        warn(f"{path}: {meta[IGNORED]} (recorded in the store's params.metadata_ignored)")
    if data.labels is not None:
        data = Transitions(**{k: v for k, v in data.arrays().items() if k != "labels"})
    store_meta = StoreMeta(
        kind="offline",
        env_id=env_id,
        source=name,
        seed=seed,
        params=import_params,
        inputs={"dataset": digest(path)},
        card=card,
    )
    return write_store(out, data, store_meta)


def _source_card(path: Path, meta: dict[str, object], data: Transitions) -> dict[str, object]:
    """The card an exported file carries (none for other files), checked against the rows read."""
    if CARD_KEY not in meta:
        return {}
    try:
        return imported_card(json.loads(str(meta[CARD_KEY])), data.arrays(), str(path))
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise DatasetError(f"{path}: metadata attribute '{CARD_KEY}' is not a cfdg dataset card ({e})") from e


def export_d4rl(store_path: str | os.PathLike, out_file: str | os.PathLike) -> Path:
    """Write a store as a D4RL-layout HDF5 file (with `next_observations`), atomically.

    Provenance and the dataset card (JSON) go into attributes of the `metadata` group;
    `cfdg_version` there marks the file so that `load_d4rl_hdf5` reads its rows back exactly.
    """
    store_path, out_file = Path(store_path), Path(out_file)
    attrs = read_attrs(store_path)
    with atomic_file(out_file) as tmp, h5py.File(tmp, "w", track_order=True) as f:
        sets: dict[str, h5py.Dataset] = {}
        for block in iter_store(store_path):
            for key, arr in block.arrays().items():
                if key not in sets:
                    shape = (0, *arr.shape[1:])
                    sets[key] = f.create_dataset(key, shape=shape, maxshape=(None, *arr.shape[1:]), dtype=arr.dtype)
                ds = sets[key]
                ds.resize(ds.shape[0] + arr.shape[0], axis=0)
                ds[-arr.shape[0] :] = arr
        if not sets:
            raise DatasetError(f"{store_path}: store is empty, nothing to export")
        meta = f.create_group("metadata")
        meta.attrs[EXPORT_MARK] = __version__
        for key in ("kind", "env_id", "source", "round", "seed", "code_version"):
            meta.attrs[key] = attrs[key]
        for key in ("params", "inputs", "counts"):
            meta.attrs[key] = json.dumps(attrs[key], sort_keys=True)
        if CARD_KEY in attrs:
            meta.attrs[CARD_KEY] = json.dumps(attrs[CARD_KEY], sort_keys=True)
    return out_file
