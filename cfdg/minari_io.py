"""Minari datasets in and out of transition stores; `minari` is optional (`pip install cfdg[minari]`).

Minari stores episodes with T+1 observations; a store row i is (obs[t], a[t], r[t], obs[t+1]).
Stores are cut into episodes at terminal/timeout rows and wherever s' of a row is not the s of
the next one (synthetic rows are independent, so each becomes its own one-step episode).

Dict observations (Minari's `D4RL/antmaze/*` datasets: observation 27 / achieved_goal 2 /
desired_goal 2) become one row vector achieved_goal ⊕ observation (29, x and y first as in
D4RL); the goal is left out, as D4RL leaves it out. The online env `antmaze-<maze>-minari`
yields exactly these vectors (cfdg.envs.FlatAntMaze).

An exported dataset carries the store's dataset card: as Minari metadata `cfdg_card` (JSON) and,
rendered as Markdown, as the dataset's `description`; importing it records the card as the new
store's `source_card`.

Datasets are found by id under $MINARI_DATASETS_PATH (default ~/.minari/datasets), where
`minari download` puts them; nothing is ever downloaded here.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cfdg.card import CARD_KEY, imported_card
from cfdg.envs import check_layout, env_name
from cfdg.errors import CfdgError, DatasetError
from cfdg.io import digest, replace_path
from cfdg.store import StoreMeta, Transitions, read_store, write_store


def _minari() -> Any:
    try:
        import minari
    except ImportError as e:
        raise DatasetError(f"Minari support needs the minari package: install cfdg[minari] ({e})") from e
    return minari


METADATA_CARD = "cfdg_card"
MINARI_ID = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*-v\d+")


def minari_root() -> Path:
    return Path(os.environ.get("MINARI_DATASETS_PATH") or "~/.minari/datasets").expanduser()


def is_minari_source(source: str | os.PathLike) -> bool:
    """A Minari id (`D4RL/antmaze/umaze-v1`, `mujoco/hopper/medium-v0`) or a Minari dataset directory."""
    s = str(source)
    if s.endswith((".hdf5", ".h5")) or Path(s).is_file():
        return False
    if Path(s).is_dir():
        return (Path(s) / "data" / "metadata.json").is_file() or (Path(s) / "metadata.json").is_file()
    return "/" in s and MINARI_ID.fullmatch(s) is not None


def find_minari_dataset(source: str | os.PathLike) -> Path:
    """The directory of a local Minari dataset given its id or path; never downloads."""
    s = str(source)
    if Path(s).is_dir():
        return Path(s)
    path = minari_root() / s
    if not (path / "data").is_dir():
        raise DatasetError(
            f"Minari dataset {s!r} not found: no {path / 'data'} (set MINARI_DATASETS_PATH to the folder "
            "holding it, or run `minari download` yourself; cfdg never downloads)"
        )
    return path


def _flat_observations(obs: Any, where: Path) -> np.ndarray:
    """One vector per step: plain arrays as they are, AntMaze dicts as achieved_goal ⊕ observation."""
    if isinstance(obs, dict):
        missing = {"observation", "achieved_goal"} - set(obs)
        if missing:
            raise DatasetError(f"{where}: dict observations lack {sorted(missing)} (keys {sorted(obs)})")
        return np.concatenate([np.asarray(obs["achieved_goal"]), np.asarray(obs["observation"])], axis=1)
    return np.asarray(obs)


def _check_maze(ds: Any, env_id: str, where: Path) -> None:
    """An AntMaze dataset must be recorded in the maze the online env builds (walls compared)."""
    if not env_id.startswith("antmaze-"):
        return
    from cfdg.envs import maze_map

    kwargs = getattr(getattr(ds, "env_spec", None), "kwargs", None) or {}
    recorded = kwargs.get("maze_map")
    if recorded is None:
        return
    walls = [[int(c == 1) for c in row] for row in recorded]
    ours = [[int(c == 1) for c in row] for row in maze_map(env_id.split("-")[1], "minari")]
    if walls != ours:
        raise DatasetError(f"{where}: recorded in a maze whose walls differ from D4RL's {env_id.split('-')[1]} maze")


def import_minari(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    env: str | None = None,
    seed: int = 0,
    source: str | None = None,
) -> Path:
    """Write the offline store `out` from a Minari dataset (its directory, or its id under $MINARI_DATASETS_PATH)."""
    minari = _minari()
    dataset_dir = find_minari_dataset(dataset_dir)
    data_path = dataset_dir / "data" if (dataset_dir / "data").is_dir() else dataset_dir
    try:
        ds = minari.MinariDataset(str(data_path))
        parts = []
        for ep in ds.iterate_episodes():
            obs = _flat_observations(ep.observations, dataset_dir)
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
        spec_id = getattr(getattr(ds, "env_spec", None), "id", None) or getattr(ds, "id", None)
        source_card = ds.storage.metadata.get(METADATA_CARD)
    except Exception as e:
        raise DatasetError(f"{dataset_dir}: not a readable Minari dataset ({type(e).__name__}: {e})") from e
    if not parts:
        raise DatasetError(f"{dataset_dir}: Minari dataset has no episodes")
    try:
        data = Transitions.from_arrays({k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, str(dataset_dir))
        env_id = env_name(env or spec_id or dataset_dir.name)
    except CfdgError as e:
        raise DatasetError(str(e)) from e
    _check_maze(ds, env_id, dataset_dir)
    check_layout(env_id, data.obs_dim, data.act_dim, dataset_dir)
    try:
        card = imported_card(source_card, data.arrays(), str(dataset_dir))
    except ValueError as e:
        raise DatasetError(f"{dataset_dir}: metadata '{METADATA_CARD}' is not a cfdg dataset card ({e})") from e
    meta = StoreMeta(
        kind="offline",
        env_id=env_id,
        source=str(source if source is not None else dataset_dir),
        seed=seed,
        params={"format": "minari"},
        inputs={"dataset": digest(data_path)},
        card=card,
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
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers: list[Any] = []
    for idx in _episodes(data):
        buffers.append(
            EpisodeBuffer(
                id=len(buffers),
                observations=np.concatenate([data.observations[idx], data.next_observations[idx[-1:]]]),
                actions=data.actions[idx],
                rewards=data.rewards[idx].tolist(),
                terminations=data.terminals[idx].tolist(),
                truncations=(data.timeouts[idx] | (~data.terminals[idx] & (idx == idx[-1]))).tolist(),
            )
        )
    from cfdg.card_text import render_markdown
    from cfdg.envs import gym_id, is_robotics, make_env

    card = attrs.get(CARD_KEY)
    about = {"description": render_markdown(card, dataset_id)} if isinstance(card, dict) else {}

    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-") as root:
        previous = os.environ.get("MINARI_DATASETS_PATH")
        os.environ["MINARI_DATASETS_PATH"] = root
        try:
            if is_robotics(attrs["env_id"]):  # rows are the flat D4RL/Minari layout, not the raw env's dict
                e = make_env(attrs["env_id"])
                spaces = {"observation_space": e.observation_space, "action_space": e.action_space}
                ds = minari.create_dataset_from_buffers(
                    dataset_id, buffers, algorithm_name=attrs["source"], **spaces, **about
                )
            else:
                ds = minari.create_dataset_from_buffers(
                    dataset_id, buffers, env=gym_id(attrs["env_id"]), algorithm_name=attrs["source"], **about
                )
            if about:
                ds.storage.update_metadata({METADATA_CARD: card})
        finally:
            if previous is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = previous
        replace_path(Path(root) / dataset_id, out_dir)
    return out_dir
