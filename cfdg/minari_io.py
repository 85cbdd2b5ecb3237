"""Minari datasets in and out of transition stores; `minari` is optional (`pip install cfdg[minari]`).

Minari stores episodes with T+1 observations; a store row i is (obs[t], a[t], r[t], obs[t+1]).
Stores are cut into episodes at terminal/timeout rows and wherever s' of a row is not the s of
the next one (synthetic rows are independent, so each becomes its own one-step episode).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cfdg.envs import env_name
from cfdg.errors import CfdgError, DatasetError
from cfdg.io import digest, replace_path
from cfdg.store import StoreMeta, Transitions, read_store, write_store


def _minari() -> Any:
    try:
        import minari
    except ImportError as e:
        raise DatasetError(f"Minari support needs the minari package: install cfdg[minari] ({e})") from e
    return minari


def import_minari(
    dataset_dir: str | os.PathLike, out: str | os.PathLike, env: str | None = None, seed: int = 0
) -> Path:
    """Write the offline store `out` from the Minari dataset directory `dataset_dir`."""
    minari = _minari()
    dataset_dir = Path(dataset_dir)
    data_path = dataset_dir / "data" if (dataset_dir / "data").is_dir() else dataset_dir
    try:
        ds = minari.MinariDataset(str(data_path))
        parts = []
        for ep in ds.iterate_episodes():
            obs = np.asarray(ep.observations)
            parts.append(
                {
                    "observations": obs[:-1],
                    "actions": np.asarray(ep.actions),
                    "rewards": np.asarray(ep.rewards).reshape(-1),
                    "next_observations": obs[1:],
                    "terminals": np.asarray(ep.terminations).reshape(-1),
                    "timeouts": np.asarray(ep.truncations).reshape(-1),
                }
            )
        spec_id = getattr(getattr(ds, "env_spec", None), "id", None)
    except Exception as e:
        raise DatasetError(f"{dataset_dir}: not a readable Minari dataset ({type(e).__name__}: {e})") from e
    if not parts:
        raise DatasetError(f"{dataset_dir}: Minari dataset has no episodes")
    try:
        data = Transitions.from_arrays({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, str(dataset_dir))
        env_id = env_name(env or spec_id or dataset_dir.name)
    except CfdgError as e:
        raise DatasetError(str(e)) from e
    meta = StoreMeta(
        kind="offline",
        env_id=env_id,
        source=str(dataset_dir),
        seed=seed,
        params={"format": "minari"},
        inputs={"dataset": digest(data_path)},
    )
    return write_store(out, data, meta)


def _episodes(t: Transitions) -> list[np.ndarray]:
    n = len(t)
    ends = t.terminals | t.timeouts
    ends[:-1] |= (t.next_observations[:-1] != t.observations[1:]).any(1)
    ends[n - 1] = True
    stops = np.flatnonzero(ends) + 1
    return [np.arange(a, b) for a, b in zip(np.concatenate([[0], stops[:-1]]), stops, strict=True)]


def export_minari(store: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write a store as a Minari dataset directory `out_dir` (dataset id `<env>-cfdg-v0`)."""
    minari = _minari()
    data, attrs = read_store(store)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    dataset_id = f"{attrs['env_id']}-cfdg-v0"
    buffers = []
    for idx in _episodes(data):
        buffers.append(
            {
                "observations": np.concatenate([data.observations[idx], data.next_observations[idx[-1:]]]),
                "actions": data.actions[idx],
                "rewards": data.rewards[idx],
                "terminations": data.terminals[idx],
                "truncations": data.timeouts[idx] | (~data.terminals[idx] & (idx == idx[-1])),
            }
        )
    from cfdg.envs import gym_id

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-") as root:
        previous = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = root
        try:
            minari.create_dataset_from_buffers(
                dataset_id, buffers, env=gym_id(attrs["env_id"]), algorithm_name=attrs["source"]
            )
        finally:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
        replace_path(Path(root) / dataset_id, out_dir)
    return out_dir
