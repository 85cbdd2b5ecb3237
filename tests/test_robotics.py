"""AntMaze and Adroit on real gymnasium-robotics envs: D4RL layouts, rewards, files, Minari, a round.

Every dataset here is recorded from real rollouts of the real envs: a D4RL-layout HDF5 file
(what `d4rl.qlearning_dataset` users hold) and Minari datasets written by minari's DataCollector
into a temporary $MINARI_DATASETS_PATH (what `minari download` leaves on disk).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import h5py
import mujoco
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from cfdg import envs
from cfdg.agents.config import PretrainConfig, RolloutConfig
from cfdg.agents.registry import agent_config
from cfdg.agents.resume import capture_env, restore_env
from cfdg.agents.train import pretrain, run_round
from cfdg.cli import main
from cfdg.d4rl import import_d4rl
from cfdg.errors import CfdgError, DatasetError
from cfdg.store import read_attrs, read_store

HAS_MINARI = importlib.util.find_spec("minari") is not None
ENVS = ["antmaze-umaze", "antmaze-medium", "antmaze-large", "antmaze-umaze-minari", "pen", "door", "hammer", "relocate"]


@pytest.mark.parametrize("name", ENVS)
def test_online_envs_have_d4rl_widths_and_horizons(name):
    e = envs.make_env(name, seed=0)
    obs, _ = e.reset(seed=1)
    fam = envs.family(name)
    assert obs.shape == (envs.OBS_DIMS[fam],) == e.observation_space.shape
    assert e.action_space.shape == (envs.ACT_DIMS[fam],)
    horizon = envs.HORIZONS[name.removesuffix("-minari")]
    assert {"antmaze-umaze": 700, "antmaze-medium": 1000, "antmaze-large": 1000, "pen": 100}.get(
        name.removesuffix("-minari"), 200
    ) == horizon
    steps, done = 0, False
    while not done:
        _, _, term, trunc, _ = e.step(np.zeros(e.action_space.shape, np.float32))
        steps, done = steps + 1, term or trunc
    assert steps == horizon


@pytest.mark.parametrize(
    ("d4rl", "env"),
    [(n, f"antmaze-{n.split('-')[1]}") for n in envs.D4RL_ANTMAZE] + [(n, n.split("-")[0]) for n in envs.D4RL_ADROIT],
)
def test_every_d4rl_name_maps_to_an_env(d4rl, env):
    assert envs.env_name(d4rl) == env
    assert envs.gym_id(d4rl).startswith(("AntMaze_", "AdroitHand"))


def test_d4rl_maze_geometry_start_and_goal():
    """Walls sit where D4RL's maze builder puts them (cell (i, j) at x = 4(j − 1), y = 4(i − 1))."""
    from gymnasium_robotics.envs.maze import maps

    for maze, walls, goal_xy in (
        ("umaze", maps.U_MAZE, (0, 8)),
        ("medium", maps.MEDIUM_MAZE, (20, 20)),
        ("large", maps.LARGE_MAZE, (32, 24)),
    ):
        e = envs.make_env(f"antmaze-{maze}", seed=0)
        u = e.unwrapped
        for i, row in enumerate(walls):
            for j, cell in enumerate(row):
                gi, gj = u.maze.cell_xy_to_rowcol(np.array([4.0 * (j - 1), 4.0 * (i - 1)]) + e.origin)
                assert (u.maze.maze_map[gi][gj] == 1) == (cell == 1), (maze, i, j)
        for seed in range(5):
            obs, _ = e.reset(seed=seed)
            assert np.abs(obs[:2]).max() <= 0.1 + 1e-9  # D4RL: start cell + U(±0.1)
            assert 0.0 <= e.goal[0] - goal_xy[0] <= 1.0 and 0.0 <= e.goal[1] - goal_xy[1] <= 1.0


def teleport(e, xy_gr: np.ndarray) -> None:
    u = e.unwrapped
    qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
    qpos[:2] = xy_gr
    u.ant_env.set_state(qpos, qvel)


def test_antmaze_sparse_reward_terminates_at_the_goal_and_scores_success():
    e = envs.make_env("antmaze-umaze", seed=0)
    e.reset(seed=3)
    _, r, term, trunc, _ = e.step(np.zeros(8, np.float32))
    assert (r, term, trunc) == (0.0, False, False)
    teleport(e, e.unwrapped.goal + np.array([0.3, 0.3]))  # 0.42 m away: D4RL's radius is 0.5
    _, r, term, _, info = e.step(np.zeros(8, np.float32))
    assert (r, term, info["success"]) == (1.0, True, True)
    assert envs.normalized_score("antmaze-umaze", r) == 100.0
    assert envs.normalized_score("antmaze-umaze", 0.0) == 0.0


def d4rl_door_reward(u) -> float:
    """mj_envs DoorEnvV0.step, written from D4RL's formula."""
    d = u.data
    handle, palm = d.site_xpos[u.handle_site_id], d.site_xpos[u.grasp_site_id]
    door = d.qpos[u.door_hinge_addrs]
    r = -0.1 * np.linalg.norm(palm - handle) - 0.1 * (door - 1.57) ** 2 - 1e-5 * np.sum(d.qvel**2)
    return float(r + 2 * (door > 0.2) + 8 * (door > 1.0) + 10 * (door > 1.35))


def test_adroit_reward_is_d4rls():
    e = envs.make_env("door", seed=0)
    e.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        _, r, _, _, _ = e.step(rng.uniform(-1, 1, 28).astype(np.float32))
        assert r == pytest.approx(d4rl_door_reward(e.unwrapped), abs=1e-9)


@pytest.mark.parametrize("name", ["door", "relocate", "antmaze-umaze"])
def test_episode_state_resumes_bit_for_bit(name):
    """Mid-episode capture/restore carries what resets randomise outside MuJoCo's data (door, goal)."""
    a, b = envs.make_env(name, seed=0), envs.make_env(name, seed=0)
    a.reset(seed=5)
    b.reset(seed=9)  # another door position / goal
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (30, a.action_space.shape[0])).astype(np.float32)
    for act in actions[:10]:
        obs, *_ = a.step(act)
    state = capture_env(a, obs, 0.0, 10)
    restore_env(b, state)
    for act in actions[10:]:
        oa, ra, ta, *_ = a.step(act)
        ob, rb, tb, *_ = b.step(act)
        np.testing.assert_array_equal(oa, ob)
        assert (ra, ta) == (rb, tb)


# --- datasets recorded from the real envs ------------------------------------------------------


def record(name: str, n: int, seed: int) -> dict[str, np.ndarray]:
    """`n` rows of D4RL's file layout from uniform random actions (timeouts where the env truncates)."""
    e = envs.make_env(name)
    rng = np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    obs, _ = e.reset(seed=seed)
    for _ in range(n):
        a = rng.uniform(-1, 1, e.action_space.shape).astype(np.float32)
        nxt, r, term, trunc, _ = e.step(a)
        for k, v in zip(cols, (obs, a, r, term, trunc and not term), strict=True):
            cols[k].append(v)
        obs = e.reset()[0] if term or trunc else nxt
    return {k: np.asarray(v) for k, v in cols.items()}


def write_d4rl(path: Path, rows: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for k, v in rows.items():
            f[k] = v.astype(np.float32) if v.dtype.kind == "f" else v
    return path


def tiny_loop(store: Path, tmp: Path, algo: str = "iql") -> dict:
    agent = {
        "algo": algo,
        "hidden_dims": (32, 32),
        "batch_size": 32,
        "iql_tau": 0.9,
        "iql_beta": 10.0,
        "reward_shift": -1.0,
    }
    cfg = agent_config(agent)
    pre = pretrain(store, cfg, PretrainConfig(steps=20, eval_every=0, eval_episodes=1), tmp / "a0.pt", 0, False)
    online = RolloutConfig(steps=60, warmup_steps=30, eval_episodes=1, chunk_rows=60, log_every=30)
    m = run_round(tmp / "a0.pt", store, None, None, online, tmp / "a1.pt", tmp / "online.zarr", 1, False, algo=algo)
    online_rows, attrs = read_store(tmp / "online.zarr")
    assert len(online_rows) == 60 and attrs["env_id"] == read_attrs(store)["env_id"]
    assert m["gradient_steps"] == 31 and np.isfinite(m["final_normalized_score"])
    return {"pretrain": pre, "round": m}


def test_d4rl_antmaze_file_imports_by_name_and_runs_a_round(tmp_path, monkeypatch):
    rows = record("antmaze-umaze", 400, seed=0)
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_d4rl(tmp_path / "antmaze_umaze_diverse-v2.hdf5", rows)  # D4RL's file name for antmaze-umaze-diverse-v2
    store = import_d4rl("antmaze-umaze-diverse-v2", tmp_path / "off.zarr")
    data, attrs = read_store(store)
    assert attrs["env_id"] == "antmaze-umaze" and data.obs_dim == 29
    # Row for row: the online env replayed with the same seed and actions yields the file's observations.
    e = envs.make_env("antmaze-umaze")
    obs, _ = e.reset(seed=0)
    for i in range(50):
        np.testing.assert_allclose(data.observations[i], obs.astype(np.float32), rtol=0, atol=0)
        obs, *_ = e.step(rows["actions"][i])
        np.testing.assert_allclose(data.next_observations[i], obs.astype(np.float32), rtol=0, atol=0)
    out = tiny_loop(store, tmp_path)
    assert out["round"]["env"] == "antmaze-umaze"
    assert out["round"]["final_normalized_score"] in (0.0, 100.0)  # success rate × 100 over one episode


def test_d4rl_adroit_file_imports_by_name_and_runs_a_round(tmp_path, monkeypatch):
    rows = record("hammer", 300, seed=1)  # one full 200-step episode (a timeout) and part of the next
    assert rows["timeouts"].sum() == 1
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    write_d4rl(tmp_path / "hammer_human-v1.hdf5", rows)  # D4RL's file name for hammer-human-v1
    store = import_d4rl("hammer-human-v1", tmp_path / "off.zarr")
    data, attrs = read_store(store)
    assert attrs["env_id"] == "hammer" and data.obs_dim == 46 and data.act_dim == 26
    assert len(data) == 298  # qlearning_dataset: the timeout row and the last row are dropped
    e = envs.make_env("hammer")
    obs, _ = e.reset(seed=1)
    for i in range(30):
        np.testing.assert_array_equal(data.observations[i], obs.astype(np.float32))
        obs, r, *_ = e.step(rows["actions"][i])
        assert data.rewards[i] == np.float32(r)
    out = tiny_loop(store, tmp_path, algo="pex")
    assert out["round"]["env"] == "hammer" and out["pretrain"]["algo"] == "pex"


def test_layout_mismatch_is_one_clear_error(tmp_path, capsys):
    rows = record("hopper", 50, seed=0)
    write_d4rl(tmp_path / "antmaze-large-play-v2.hdf5", rows)
    with pytest.raises(DatasetError, match=r"rows are 11 \(obs\) / 3 \(action\) wide but env 'antmaze-large'"):
        import_d4rl(tmp_path / "antmaze-large-play-v2.hdf5", tmp_path / "x.zarr")
    assert main(["dataset", "import", str(tmp_path / "antmaze-large-play-v2.hdf5"), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "antmaze-large" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y").exists()


def test_robotics_kinds_other_than_random_refuse_to_build():
    from cfdg.config import from_mapping
    from cfdg.datasets.build import DatasetConfig

    with pytest.raises(CfdgError, match="dataset.kind: 'medium' cannot be built for antmaze-umaze"):
        from_mapping(DatasetConfig, {"env": "antmaze-umaze", "kind": "medium"}, "dataset")
    assert from_mapping(DatasetConfig, {"env": "pen", "kind": "random"}, "dataset").env == "pen"


def test_random_builds_for_robotics_envs(tmp_path):
    from cfdg.config import from_mapping
    from cfdg.datasets.build import DatasetConfig, build_dataset

    for env in ("antmaze-umaze", "hammer"):
        cfg = from_mapping(DatasetConfig, {"env": env, "kind": "random", "transitions": 300}, "dataset")
        card = build_dataset(cfg, tmp_path / f"{env}.zarr", None, progress=False)
        data, attrs = read_store(tmp_path / f"{env}.zarr")
        assert attrs["env_id"] == env and len(data) == 300 and data.obs_dim == envs.OBS_DIMS[envs.family(env)]
        assert card["episodes"] >= (1 if env == "hammer" else 0)


# --- Minari datasets ----------------------------------------------------------------------------


def collect_minari(dataset_id: str, env, steps: int, seed: int) -> None:
    """Record `steps` random steps with minari's DataCollector, as `minari download` would leave them."""
    import minari

    collector = minari.DataCollector(env, record_infos=False)
    collector.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        _, _, term, trunc, _ = collector.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        if term or trunc:
            collector.reset()
    collector.create_dataset(dataset_id=dataset_id, algorithm_name="random")
    collector.close()


@pytest.fixture
def minari_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.mark.skipif(not HAS_MINARI, reason="needs cfdg[minari]")
def test_minari_antmaze_imports_by_id_through_the_cli(minari_root, tmp_path, capsys):
    import gymnasium as gym

    envs.make_env("antmaze-umaze")  # registers gymnasium-robotics
    raw = gym.make(
        "AntMaze_UMaze-v4", maze_map=envs.maze_map("umaze", "minari"), continuing_task=False, max_episode_steps=700
    )
    collect_minari("D4RL/antmaze/umaze-v1", raw, 300, seed=0)
    assert main(["dataset", "import", "D4RL/antmaze/umaze-v1", "--out", str(tmp_path / "m.zarr")]) == 0
    assert "env antmaze-umaze-minari" in capsys.readouterr().out
    data, attrs = read_store(tmp_path / "m.zarr")
    assert attrs["source"] == "D4RL/antmaze/umaze-v1" and data.obs_dim == 29
    # The online env of that layout replays the dataset row for row.
    import minari

    ep = next(minari.load_dataset("D4RL/antmaze/umaze-v1").iterate_episodes())
    e = envs.make_env(attrs["env_id"])
    obs, _ = e.reset(seed=0)
    np.testing.assert_array_equal(data.observations[0], obs.astype(np.float32))
    for i in range(40):
        obs, r, *_ = e.step(ep.actions[i])
        np.testing.assert_array_equal(data.next_observations[i], obs.astype(np.float32))
        assert data.rewards[i] == r
    # Not there: one line naming where it looked, nothing downloaded.
    assert main(["dataset", "import", "D4RL/antmaze/large-play-v1", "--out", str(tmp_path / "n.zarr")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and str(minari_root) in err and "never downloads" in err


@pytest.mark.skipif(not HAS_MINARI, reason="needs cfdg[minari]")
def test_minari_adroit_as_dataset_source_runs_a_round(minari_root, tmp_path):
    from stages.dataset import make_dataset

    envs.make_env("pen")
    import gymnasium as gym

    collect_minari("D4RL/pen/human-v2", gym.make("AdroitHandPen-v1", max_episode_steps=100), 250, seed=1)
    ds = tmp_path / "ds"
    metrics = make_dataset("D4RL/pen/human-v2", None, ds / "off.zarr", ds / "card.json", False)
    assert metrics["rows"] == 250
    assert read_attrs(tmp_path / "ds" / "off.zarr")["env_id"] == "pen"
    out = tiny_loop(tmp_path / "ds" / "off.zarr", tmp_path)
    assert out["round"]["env"] == "pen"


@pytest.mark.skipif(not HAS_MINARI, reason="needs cfdg[minari]")
def test_minari_mujoco_hopper_as_dataset_source(minari_root, tmp_path):
    from stages.dataset import make_dataset

    collect_minari("mujoco/hopper/medium-v0", envs.make_env("hopper"), 200, seed=2)
    make_dataset("mujoco/hopper/medium-v0", None, tmp_path / "off.zarr", tmp_path / "card.json", False)
    data, attrs = read_store(tmp_path / "off.zarr")
    assert attrs["env_id"] == "hopper" and len(data) == 200 and data.obs_dim == 11


def test_mujoco_is_the_mujoco_bindings():
    """gymnasium-robotics runs on DeepMind's `mujoco` bindings (D4RL ran on mujoco-py)."""
    e = envs.make_env("antmaze-umaze", seed=0)
    assert isinstance(e.unwrapped.model, mujoco.MjModel)


def test_apl_is_refused_on_antmaze_and_adroit(tmp_path):
    from cfdg.config import from_mapping
    from cfdg.datasets.build import DatasetConfig, build_dataset
    from cfdg.errors import ConfigError

    cfg = from_mapping(DatasetConfig, {"env": "relocate", "kind": "random", "transitions": 50}, "dataset")
    build_dataset(cfg, tmp_path / "r.zarr", None, progress=False)
    with pytest.raises(ConfigError, match="agent.algo: apl runs on locomotion only"):
        pretrain(
            tmp_path / "r.zarr", agent_config({"algo": "apl"}), PretrainConfig(steps=1), tmp_path / "a.pt", 0, False
        )
    assert not (tmp_path / "a.pt").exists()


@pytest.mark.parametrize(
    ("presets", "algo", "checks"),
    [
        (["antmaze"], "iql", {"iql_tau": 0.9, "iql_beta": 10.0, "reward_shift": -1.0}),
        (["adroit"], "iql", {"iql_tau": 0.8, "iql_beta": 3.0, "actor_dropout": 0.1}),
        (["calql"], "calql", {"cql_alpha": 10.0, "cql_policy_lr": 3e-5}),
        (["antmaze", "calql-antmaze"], "calql", {"cql_lagrange": True, "calql_sparse_mc": True, "cql_q_layers": 5}),
        (["adroit", "calql-adroit"], "calql", {"cql_alpha": 1.0, "cql_q_layers": 3, "normalize_obs": False}),
    ],
)
def test_domain_presets_validate(tmp_path, presets, algo, checks):
    import shutil

    from pipeline import sections
    from pipeline.preset import apply_preset
    from tests.pipeline_project import ROOT

    path = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", path)
    for name in presets:
        apply_preset(ROOT / "configs" / f"{name}.yaml", path)
    agent = sections.load_all(path).sections["agent"]
    assert agent.algo == algo and all(getattr(agent, k) == v for k, v in checks.items())


@pytest.mark.skipif(not HAS_MINARI, reason="needs cfdg[minari]")
@pytest.mark.parametrize("env", ["antmaze-umaze", "antmaze-large-minari", "door"])
def test_robotics_store_exports_to_minari_and_back(tmp_path, env):
    from cfdg.config import from_mapping
    from cfdg.datasets.build import DatasetConfig, build_dataset
    from cfdg.minari_io import export_minari, import_minari

    cfg = from_mapping(DatasetConfig, {"env": env, "kind": "random", "transitions": 120}, "dataset")
    build_dataset(cfg, tmp_path / "s.zarr", None, progress=False)
    back, attrs = read_store(import_minari(export_minari(tmp_path / "s.zarr", tmp_path / "m"), tmp_path / "b.zarr"))
    orig, _ = read_store(tmp_path / "s.zarr")
    assert attrs["env_id"] == env
    for key, arr in orig.arrays().items():
        np.testing.assert_array_equal(getattr(back, key), arr, err_msg=key)
