"""Simulator fidelity on real MuJoCo rollouts: real rows score ~0, broken rows and wrong resets do not.

The rollouts come from the project's own envs (`cfdg.envs.make_env`) under a smooth low-amplitude
noise policy, which keeps walker2d's joint velocities mostly inside the observation's ±10 clip
(a uniform random policy drives ~80% of walker2d rows to the bound; see the clipping test).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cfdg.envs import make_env
from cfdg.errors import CfdgError, ConfigError, StoreError
from cfdg.fidelity import (
    ObsLayout,
    make_simulator,
    simulate_rows,
    simulator_fidelity,
    state_from_observation,
)
from cfdg.store import Transitions

ENVS = ("hopper", "walker2d", "halfcheetah", "ant")
ROWS = 600


def rollout(env: str, n: int, seed: int, amplitude: float = 0.3, smooth: float = 0.9, **make_kwargs) -> Transitions:
    """n real transitions of `env`, episodes reset on termination or truncation."""
    e = make_env(env, seed) if not make_kwargs else _make(env, seed, **make_kwargs)
    rng = np.random.default_rng(seed)
    act_dim = e.action_space.shape[0]
    rows: dict[str, list] = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    obs, _ = e.reset(seed=seed)
    noise = np.zeros(act_dim)
    for _ in range(n):
        noise = smooth * noise + (1 - smooth) * rng.uniform(-1, 1, act_dim)
        action = (amplitude * noise).astype(np.float32)
        nxt, rew, term, trunc, _ = e.step(action)
        for k, v in zip(rows, (obs, action, rew, nxt, term, trunc), strict=True):
            rows[k].append(v)
        obs = nxt
        if term or trunc:
            obs, _ = e.reset()
    e.close()
    return Transitions.from_arrays({k: np.asarray(v) for k, v in rows.items()})


def _make(env: str, seed: int, **kwargs):
    import gymnasium as gym

    from cfdg.envs import gym_id

    e = gym.make(gym_id(env), **kwargs)
    e.action_space.seed(seed)
    return e


@pytest.fixture(scope="module", params=ENVS)
def real(request) -> tuple[str, Transitions]:
    return request.param, rollout(request.param, ROWS, seed=1)


def with_next(data: Transitions, next_obs: np.ndarray) -> Transitions:
    return dataclasses.replace(data, next_observations=next_obs.astype(np.float32))


def test_real_transitions_score_zero(real):
    env, data = real
    f = simulator_fidelity(data, env, max_rows=ROWS, seed=0)
    assert f["rows_sampled"] == ROWS
    assert f["share_checked"] >= 0.95, f
    assert f["rows_checked"] + sum(f["rows_skipped"].values()) == ROWS
    assert f["next_state_rel_error"] <= 0.01, f
    assert f["reward_rel_error"] <= 0.01, f
    assert f["termination_agreement"] == 1.0, f
    assert f["copy_mse"] > 0


def test_shuffled_next_states_score_high(real):
    env, data = real
    perm = np.random.default_rng(0).permutation(len(data))
    f = simulator_fidelity(with_next(data, data.next_observations[perm]), env, max_rows=ROWS, seed=0)
    assert f["next_state_rel_error"] >= 0.5, f
    # Rewards and terminals were left alone: the reward check does not move with s'.
    assert f["reward_rel_error"] <= 0.01


def test_copying_s_scores_one(real):
    env, data = real
    f = simulator_fidelity(with_next(data, data.observations), env, max_rows=ROWS, seed=0)
    assert f["next_state_rel_error"] == pytest.approx(1.0, abs=1e-6)


def shift_positions(obs: np.ndarray, layout: ObsLayout) -> tuple[np.ndarray, np.ndarray]:
    """Wrong: forgets that x is absent, so every observed position lands one slot early."""
    qpos, qvel = state_from_observation(obs, layout)
    return np.roll(qpos, -1), qvel


def drop_velocities(obs: np.ndarray, layout: ObsLayout) -> tuple[np.ndarray, np.ndarray]:
    """Wrong: resets the positions only (a common slip: set_state(qpos, zeros))."""
    qpos, qvel = state_from_observation(obs, layout)
    return qpos, np.zeros_like(qvel)


def swap_velocity_frames(obs: np.ndarray, layout: ObsLayout) -> tuple[np.ndarray, np.ndarray]:
    """Wrong, subtly: the root's velocities reversed in order (e.g. angular and linear parts mixed up)."""
    qpos, qvel = state_from_observation(obs, layout)
    root = 6 if layout.env == "ant" else 3
    qvel[:root] = qvel[:root][::-1]
    return qpos, qvel


@pytest.mark.parametrize("wrong", [shift_positions, drop_velocities, swap_velocity_frames])
def test_wrong_reset_fails_the_bar(real, wrong):
    """The real-data bar (<= 0.01) is only a test of the reset if a wrong reset misses it."""
    env, data = real
    f = simulator_fidelity(data, env, max_rows=ROWS, seed=0, to_state=wrong)
    assert f["next_state_rel_error"] > 0.01, (wrong.__name__, f)


def test_clipped_velocities_are_skipped_and_would_be_wrong():
    """Uniform random walker2d rows hit the ±10 velocity clip; those are skipped, the rest are exact."""
    data = rollout("walker2d", 400, seed=2, amplitude=1.0, smooth=0.0)
    f = simulator_fidelity(data, "walker2d", max_rows=400, seed=0)
    assert f["rows_skipped"]["velocity_clipped"] > 50
    assert f["next_state_rel_error"] <= 0.01
    # Resetting them anyway, at the clipped velocity, gives a visibly wrong next state.
    sim, layout = make_simulator("walker2d", data.obs_dim)
    clipped = np.abs(data.observations[:, -layout.nv :]).max(axis=1) >= 10 - 1e-4
    unclipped = dataclasses.replace(layout, velocity_clip=None)
    s_sim, _, _, reasons = simulate_rows(sim, unclipped, data.observations[clipped], data.actions[clipped])
    assert all(r is None for r in reasons)
    err = np.mean((data.next_observations[clipped] - s_sim) ** 2)
    copy = np.mean((data.observations[clipped] - s_sim) ** 2)
    assert err / copy > 0.01


def test_impossible_rows_are_counted_not_checked():
    data = rollout("hopper", 50, seed=3)
    obs = data.observations.copy()
    obs[:5, -1] = 12.0  # beyond hopper's ±10 observation clip: no real observation looks like this
    obs[5:8, -1] = 10.0  # at the bound: the true velocity is unknown
    f = simulator_fidelity(dataclasses.replace(data, observations=obs), "hopper", max_rows=50, seed=0)
    assert f["rows_skipped"] == {"velocity_clipped": 3, "velocity_beyond_clip": 5, "simulator_unstable": 0}
    assert f["rows_checked"] == 42 and f["share_checked"] == pytest.approx(42 / 50)
    cheetah = rollout("halfcheetah", 20, seed=3)
    obs = cheetah.observations.copy()
    obs[:4, 8] = 1e12
    g = simulator_fidelity(dataclasses.replace(cheetah, observations=obs), "halfcheetah", max_rows=20, seed=0)
    assert g["rows_skipped"]["simulator_unstable"] == 4
    assert g["rows_checked"] == 16
    assert g["next_state_rel_error"] <= 0.01


def test_deterministic_and_subsampled():
    data = rollout("hopper", 300, seed=4)
    a = simulator_fidelity(data, "Hopper-v5", max_rows=100, seed=7)
    b = simulator_fidelity(data, "hopper-medium-replay-v2", max_rows=100, seed=7)
    assert a == b
    assert a["rows_sampled"] == 100
    noisy = with_next(
        data, data.next_observations + np.random.default_rng(0).normal(0, 0.05, data.next_observations.shape)
    )
    c = simulator_fidelity(noisy, "hopper", max_rows=100, seed=7)
    d = simulator_fidelity(noisy, "hopper", max_rows=100, seed=8)
    assert c["next_state_mse"] != d["next_state_mse"]
    assert c["next_state_mse"] == pytest.approx(0.05**2, rel=0.2)


def test_reward_and_termination_errors_are_seen():
    data = rollout("hopper", 300, seed=5)
    assert data.terminals.any()
    flipped = dataclasses.replace(data, terminals=~data.terminals)
    assert simulator_fidelity(flipped, "hopper", max_rows=300)["termination_agreement"] == 0.0
    shifted = dataclasses.replace(data, rewards=data.rewards + np.float32(1.0))
    f = simulator_fidelity(shifted, "hopper", max_rows=300)
    assert f["reward_mse"] == pytest.approx(1.0, rel=1e-4)
    assert f["reward_rel_error"] > 0.5


def test_ant_without_contact_forces():
    data = rollout("ant", 200, seed=6, include_cfrc_ext_in_observation=False)
    assert data.obs_dim == 27
    f = simulator_fidelity(data, "ant", max_rows=200)
    assert f["share_checked"] == 1.0 and f["next_state_rel_error"] <= 0.01
    assert "next_state_rel_error_joints" not in f


@pytest.mark.parametrize(
    ("env", "obs_dim", "act_dim", "error"),
    [
        ("pen", 11, 3, ConfigError),
        ("hopper", 12, 3, StoreError),
        ("hopper", 11, 4, StoreError),
        ("ant", 111, 8, StoreError),
    ],
)
def test_bad_input_is_one_line(env, obs_dim, act_dim, error):
    n = 4
    data = Transitions.from_arrays(
        {
            "observations": np.zeros((n, obs_dim)),
            "actions": np.zeros((n, act_dim)),
            "rewards": np.zeros(n),
            "next_observations": np.zeros((n, obs_dim)),
            "terminals": np.zeros(n, bool),
            "timeouts": np.zeros(n, bool),
        }
    )
    with pytest.raises(error) as e:
        simulator_fidelity(data, env, max_rows=4)
    assert isinstance(e.value, CfdgError) and "\n" not in str(e.value)


# --- Memorisation (cfdg.quality) on real rollouts --------------------------------------------------


@pytest.fixture(scope="module")
def buffers() -> dict[str, Transitions]:
    """A training buffer and two fresh buffers from the same policy (different episodes)."""
    return {
        name: rollout("halfcheetah", n, seed=seed, amplitude=0.5, smooth=0.5)
        for name, n, seed in (("train", 2000, 10), ("fresh", 800, 11), ("held", 800, 12))
    }


@pytest.mark.parametrize("reference", ["held_out", "leave_one_episode_out"])
def test_memorisation_ratio_is_one_for_fresh_rows_and_small_for_copies(buffers, reference):
    from cfdg.quality import memorisation_ratio

    train, fresh = buffers["train"], buffers["fresh"]
    held = buffers["held"] if reference == "held_out" else None
    rng = np.random.default_rng(0)
    copies = train.take(rng.choice(len(train), 800))
    noise = rng.normal(0, 0.01, copies.observations.shape).astype(np.float32)
    near_copies = dataclasses.replace(copies, observations=copies.observations + noise)

    healthy = memorisation_ratio(fresh, train, held, max_rows=800, seed=0)
    assert healthy["rows"] == {"generated": 800, "reference": 800, "training": 2000}
    assert 0.8 <= healthy["ratio"] <= 1.25, healthy
    assert memorisation_ratio(copies, train, held, max_rows=800)["ratio"] == 0.0
    assert memorisation_ratio(near_copies, train, held, max_rows=800)["ratio"] < 0.3
    assert memorisation_ratio(fresh, train, held, max_rows=800, seed=0) == healthy


def test_fresh_rows_are_the_rows_a_later_store_added(buffers):
    from cfdg.quality import fresh_rows

    train = buffers["train"]
    grown = Transitions.concat([train, buffers["fresh"]])
    fresh = fresh_rows(train, grown)
    assert len(fresh) == len(buffers["fresh"])
    np.testing.assert_array_equal(fresh.observations, buffers["fresh"].observations)
    with pytest.raises(StoreError, match="does not start with"):
        fresh_rows(buffers["fresh"], grown)


# --- The materialise stage's measurement on real stores ---------------------------------------------


def test_materialise_measures_fidelity_and_memorisation(tmp_path):
    from cfdg.quality import QualityConfig, measure_quality
    from cfdg.store import LABEL_OFFLINE, LABEL_ONLINE, StoreMeta, write_store

    offline = rollout("hopper", 800, seed=20, amplitude=0.5)
    online = rollout("hopper", 600, seed=21, amplitude=0.5)
    # "Generated": online-labelled rows copied from the online store (exact, memorised) and
    # offline-labelled rows whose next states are shuffled (physically wrong).
    perm = np.random.default_rng(0).permutation(300)
    broken = with_next(offline.take(slice(0, 300)), offline.next_observations[:300][perm])
    copied = online.take(slice(0, 300))
    generated = Transitions.concat(
        [
            dataclasses.replace(broken, labels=np.full(300, LABEL_OFFLINE, np.uint8)),
            dataclasses.replace(copied, labels=np.full(300, LABEL_ONLINE, np.uint8)),
        ]
    )
    paths = {}
    for name, data, kind in (
        ("offline", offline, "offline"),
        ("online", online, "online"),
        ("gen", generated, "synthetic"),
    ):
        paths[name] = write_store(tmp_path / f"{name}.zarr", data, StoreMeta(kind=kind, env_id="hopper", source="test"))
    cfg = QualityConfig(max_rows=300, fidelity_rows=600)
    q = measure_quality(paths["offline"], paths["online"], paths["gen"], cfg, 1)
    fid = q["fidelity"]
    assert set(fid) == {"generated", "generated_all", "online", "offline"}
    for name in ("generated", "online", "offline"):
        assert fid[name]["next_state_rel_error"] <= 0.01 and fid[name]["share_checked"] >= 0.95, (name, fid[name])
    assert fid["generated"]["rows_sampled"] == 300 and fid["generated_all"]["rows_sampled"] == 600
    assert fid["generated_all"]["next_state_rel_error"] > 0.1
    assert q["memorisation"]["ratio"] == 0.0
    assert all(isinstance(v, int | float) for v in _leaves(fid) + _leaves(q["memorisation"]))

    off = measure_quality(
        paths["offline"], paths["online"], paths["gen"], QualityConfig(max_rows=300, fidelity_rows=0), 1
    )
    assert "fidelity" not in off and "memorisation" not in off


def _leaves(tree) -> list:
    if isinstance(tree, dict):
        return [x for v in tree.values() for x in _leaves(v)]
    return [tree]


# --- `cfdg quality --dynamics` ------------------------------------------------------------------------


def test_quality_dynamics_command(tmp_path, capsys):
    import json

    from cfdg.cli import main
    from cfdg.store import StoreMeta, write_store

    real = rollout("hopper", 300, seed=30)
    perm = np.random.default_rng(0).permutation(len(real))
    shuffled = with_next(real, real.next_observations[perm])
    meta = StoreMeta(kind="online", env_id="hopper", source="test")
    good = write_store(tmp_path / "real.zarr", real, meta)
    bad = write_store(tmp_path / "shuffled.zarr", shuffled, meta)
    odd = write_store(tmp_path / "odd.zarr", real, dataclasses.replace(meta, env_id="my-hopper-copy"))

    assert main(["quality", "--dynamics", str(good)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fidelity"]["next_state_rel_error"] <= 0.01 and out["fidelity"]["rows_checked"] == 300
    assert main(["quality", "--dynamics", str(bad), "--max-rows", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fidelity"]["next_state_rel_error"] >= 0.5 and out["fidelity"]["rows_sampled"] == 100
    assert "memorisation" not in out
    assert main(["quality", "--dynamics", str(good), "--training", str(good)]) == 0
    assert json.loads(capsys.readouterr().out)["memorisation"]["ratio"] == 0.0  # every row is a training row
    assert main(["quality", "--dynamics", str(odd), "--env", "Hopper-v5"]) == 0
    capsys.readouterr()

    for argv, needle in (
        (["--dynamics", str(odd)], "unknown env 'my-hopper-copy'"),
        (["--dynamics", str(good), "--reference", str(good)], "one mode"),
        (["--dynamics", str(good), "--label", "online"], "needs a synthetic store"),
        (["--dynamics", str(tmp_path / "nope.zarr")], "nope.zarr"),
        (["--dynamics", str(good), "--max-rows", "0"], "--max-rows"),
        (["--dynamics", str(good), "--env", "pen"], "no simulator check"),
        (["--candidate", str(good)], "--reference and --candidate"),
        (["--reference", str(good), "--candidate", str(good), "--training", str(good)], "go with --dynamics"),
    ):
        assert main(["quality", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (argv, err)


# --- The report's ground-truth table and plot -----------------------------------------------------------


def _js(x: float) -> dict:
    return {p: {"classifier": x, "histogram": x / 2} for p in ("state", "action", "transition")}


def _fid(x: float) -> dict:
    return {"next_state_rel_error": x, "reward_rel_error": x / 10, "termination_agreement": 1.0, "share_checked": 0.98}


GT_QUALITY = [
    {
        "round": 2,
        "rows": {"generated": 100},
        "offline_vs_online": _js(0.5),
        "generated_vs_online": _js(0.3),
        "generated_all_vs_online": _js(0.35),
        "fidelity": {"generated": _fid(0.2), "generated_all": _fid(0.25), "online": _fid(1e-9), "offline": _fid(2e-9)},
        "memorisation": {"ratio": 0.9},
    },
    {"round": 1, "rows": {"generated": 100}, "offline_vs_online": _js(0.55), "generated_vs_online": _js(0.4)},
]
GT_FRESH = {
    1: {
        "online_vs_fresh": _js(0.1),
        "offline_vs_fresh": _js(0.6),
        "generated_vs_fresh": _js(0.45),
        "memorisation": {"ratio": 1.1},
    }
}


def test_ground_truth_rows_table_and_plot(tmp_path):
    from matplotlib.image import imread

    from cfdg import report

    rows = report.ground_truth_rows(GT_QUALITY, GT_FRESH)
    assert [(r["round"], r["data"]) for r in rows] == [(k, d) for k in (1, 2) for d in report.GROUND_TRUTH_DATA]
    by = {(r["round"], r["data"]): r for r in rows}
    assert by[(1, "generated")]["js_state_round"] == 0.4 and by[(1, "generated")]["js_state_fresh"] == 0.45
    assert by[(1, "online")]["js_state_round"] is None and by[(1, "online")]["js_state_fresh"] == 0.1
    assert by[(1, "generated")]["memorisation_fresh"] == 1.1 and by[(1, "generated")]["next_state_rel_error"] is None
    assert by[(2, "generated")]["memorisation_round"] == 0.9 and by[(2, "generated")]["js_state_fresh"] is None
    assert by[(2, "offline")]["next_state_rel_error"] == 2e-9 and by[(2, "generated_all")]["js_state_round"] == 0.35
    md = report.ground_truth_markdown(rows)
    assert "| 2 | Generated (online-labelled) | 0.30 | – | – | 0.200 | 0.020 | 1.000 | 98% | 0.90 / – |" in md
    assert "| 2 | Real online (round buffer) | – | – | – | 1e-09 |" in md
    a = report.ground_truth_png(rows, tmp_path / "a.png")
    b = report.ground_truth_png(rows, tmp_path / "b.png")
    assert a.read_bytes() == b.read_bytes() and imread(a).std() > 0.01
    none_variant = [{"round": 1, "rows": {"generated": 0}, "offline_vs_online": _js(0.5)}]
    assert [r["data"] for r in report.ground_truth_rows(none_variant)] == ["offline", "online"]
