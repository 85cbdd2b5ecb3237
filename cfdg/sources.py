"""Where `dataset.source` / `cfdg dataset import SOURCE` reads from: a D4RL file or a Minari dataset.

- a Minari id (`D4RL/antmaze/umaze-v1`, `mujoco/hopper/medium-v0`) or a Minari dataset directory:
  read from $MINARI_DATASETS_PATH (default ~/.minari/datasets), never downloaded (cfdg.minari_io);
- anything else: a D4RL HDF5 path or D4RL dataset name (cfdg.d4rl).
"""

from __future__ import annotations

import os
from pathlib import Path

from cfdg.minari_io import find_minari_dataset, import_minari, is_minari_source


def source_path(source: str) -> Path | None:
    """The file or directory a source reads, when it exists locally (recorded as a stage input)."""
    if is_minari_source(source):
        return find_minari_dataset(source)
    p = Path(source)
    return p if p.exists() else None


def import_source(source: str, out: str | os.PathLike, seed: int = 0, env: str | None = None) -> Path:
    """Write the offline store `out` from `source`; the store's env_id names the online env to use."""
    if is_minari_source(source):
        return import_minari(find_minari_dataset(source), out, env=env, seed=seed, source=source)
    from cfdg.d4rl import import_d4rl

    return import_d4rl(source, out, seed=seed, env=env)


def check_source(source: str, root: str | os.PathLike = ".") -> Path | None:
    """Refuse now a `dataset.source` the dataset stage would fail on (missing, a directory that is not a
    Minari dataset, not HDF5, wrong keys, bad values, no env to tell); relative paths are taken from
    `root`, the project root. A Minari dataset is only found here, not read (see `checked_what`)."""
    if source == "build":
        return None
    found = _local(source, root)
    if is_minari_source(found):
        return find_minari_dataset(found)
    from cfdg.d4rl import inspect_d4rl

    return inspect_d4rl(found)


def checked_what(source: str, root: str | os.PathLike = ".") -> str:
    """What `check_source` looked at, for `cfdg check` to say: a pass that did not read the values must
    not read as one that did."""
    if source == "build":
        return "built by the dataset stage"
    if is_minari_source(_local(source, root)):
        return "Minari dataset found; its values are read only by the dataset stage"
    return "D4RL file read: keys, shapes, values, env"


def _local(source: str, root: str | os.PathLike) -> str:
    local = Path(source) if Path(source).is_absolute() else Path(root) / source
    return str(local) if local.exists() else source
