"""Training loops on real MuJoCo Hopper: IQL learns, rounds resume bit for bit, checkpoints are checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cfdg.agents.checkpoint import load_checkpoint
from cfdg.agents.config import PretrainConfig, RolloutConfig
from cfdg.agents.registry import agent_config, agent_from_checkpoint
from cfdg.agents.train import pretrain, run_round
from cfdg.config import from_mapping
from cfdg.envs import make_env, normalized_score
from cfdg.errors import CheckpointError, ConfigError
from cfdg.io import digest
from cfdg.store import StoreMeta, Transitions, read_store, write_store
from tests.conftest import make_transitions


def pd_action(obs: np.ndarray) -> np.ndarray:
    """A hand-tuned PD controller that keeps Hopper upright (≈1000 return over 1000 steps)."""
    return np.clip(-3.0 * obs[2:5] - 0.3 * obs[8:11], -1, 1)


def rollouts(n: int, policy, seed: int) -> Transitions:
    env, rng = make_env("hopper"), np.random.default_rng(seed)
    cols: dict[str, list] = {k: [] for k in ("observations", "actions", "rewards", "next_observations")}
    cols.update(terminals=[], timeouts=[])
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        a = policy(obs, rng).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        for k, v in zip(cols, (obs, a, r, nxt, term, trunc and not term), strict=True):
            cols[k].append(v)
        obs = env.reset(seed=int(rng.integers(1 << 30)))[0] if term or trunc else nxt
    return Transitions.from_arrays({k: np.asarray(v) for k, v in cols.items()})


@pytest.fixture(scope="module")
def hopper_store(tmp_path_factory) -> Path:
    """A 'medium'-style dataset: the PD controller with N(0, 0.3) action noise."""
    data = rollouts(3000, lambda o, rng: np.clip(pd_action(o) + rng.normal(0, 0.3, 3), -1, 1), seed=0)
    path = tmp_path_factory.mktemp("data") / "hopper-pd.zarr"
    return write_store(path, data, StoreMeta(kind="offline", env_id="Hopper-v5", source="test-pd"), chunk_rows=1024)


def random_returns(episodes: int, seed: int) -> list[float]:
    env, rng, out = make_env("hopper"), np.random.default_rng(0), []
    for i in range(episodes):
        env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            _, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
            total, done = total + float(r), term or trunc
        out.append(total)
    return out


def test_iql_pretraining_beats_random_policy(hopper_store, tmp_path):
    cfg = agent_config({"algo": "iql", "hidden_dims": (64, 64)})
    m = pretrain(
        hopper_store, cfg, PretrainConfig(steps=1500, eval_every=750, eval_episodes=3), tmp_path / "iql.pt", 0, False
    )
    json.dumps(m)
    assert [e["step"] for e in m["eval"]] == [750, 1500]
    rand = float(np.mean(random_returns(3, seed=10_000)))
    assert rand < 60  # Hopper falls within a few dozen steps under random actions
    assert m["final_return"] > max(10 * rand, 500), (m["final_return"], rand)
    assert m["final_normalized_score"] == pytest.approx(normalized_score("hopper", m["final_return"]))
    assert load_checkpoint(tmp_path / "iql.pt", env="hopper", algo="iql")["counters"]["env_steps_total"] == 0


# --- online rounds --------------------------------------------------------------------------

K = 150


def synthetic_store(path: Path, seed: int) -> Path:
    data = rollouts(300, lambda o, rng: rng.uniform(-1, 1, 3), seed=seed)
    labels = (np.arange(len(data)) % 5 != 0).astype(np.uint8)  # 80% online-labelled
    data = Transitions.from_arrays({**data.arrays(), "labels": labels})
    return write_store(path, data, StoreMeta(kind="synthetic", env_id="Hopper-v5", source="test"), chunk_rows=100)


def rollout_cfg(steps: int, **kw) -> RolloutConfig:
    base = {
        "steps": steps,
        "warmup_steps": 60,
        "eval_episodes": 1,
        "chunk_rows": 50,
        "online_threshold": 80,
        "log_every": 50,
    }
    return from_mapping(RolloutConfig, {**base, **kw}, "rollout")


@pytest.fixture(scope="module")
def pretrained(hopper_store, tmp_path_factory) -> dict[str, Path]:
    out = {}
    d = tmp_path_factory.mktemp("pre")
    for name in ("iql", "pex", "apl", "apl-cql", "calql"):
        algo, _, engine = name.partition("-")
        cfg = agent_config({"algo": algo, "hidden_dims": (32, 32), "batch_size": 32, "apl_engine": engine or "td3bc"})
        pretrain(hopper_store, cfg, PretrainConfig(steps=40, eval_every=0, eval_episodes=1), d / f"{name}.pt", 3, False)
        out[name] = d / f"{name}.pt"
    return out


def store_array_files(path: Path) -> dict[str, bytes]:
    """Every file of the arrays (chunks and array metadata); the group's attrs name the round and differ."""
    return {
        p.relative_to(path).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.parent != path
    }


def assert_same_checkpoint(a: Path, b: Path) -> None:
    ca, cb = (torch.load(p, weights_only=True) for p in (a, b))

    def walk(x, y, where):
        assert type(x) is type(y), where
        if isinstance(x, torch.Tensor):
            assert torch.equal(x, y), where
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}.{k}")
        elif isinstance(x, list | tuple):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                walk(u, v, f"{where}[{i}]")
        else:
            assert x == y, where

    for key in ("agent", "rng", "env_state"):
        walk(ca[key], cb[key], key)
    for key in ("env_steps_total", "online_rows"):  # 'rounds' differs: 1 round vs 2
        assert ca["counters"][key] == cb["counters"][key]


@pytest.mark.parametrize("algo", ["iql", "pex", "apl", "apl-cql", "calql"])
def test_two_rounds_equal_one_double_round_bit_for_bit(algo, pretrained, hopper_store, tmp_path):
    syn = synthetic_store(tmp_path / "syn.zarr", seed=5)
    apl = algo.startswith("apl")
    extra = {"online_buffer_size": 100} if apl else {}  # APL: the FIFO wraps within the run
    long = run_round(
        pretrained[algo],
        hopper_store,
        None,
        syn,
        rollout_cfg(2 * K, **extra),
        tmp_path / "long.pt",
        tmp_path / "long.zarr",
        1,
        False,
    )
    r1 = run_round(
        pretrained[algo],
        hopper_store,
        None,
        syn,
        rollout_cfg(K, **extra),
        tmp_path / "r1.pt",
        tmp_path / "r1.zarr",
        1,
        False,
    )
    r2 = run_round(
        tmp_path / "r1.pt",
        hopper_store,
        tmp_path / "r1.zarr",
        syn,
        rollout_cfg(K, **extra),
        tmp_path / "r2.pt",
        tmp_path / "r2.zarr",
        2,
        False,
    )
    assert torch.load(tmp_path / "r1.pt", weights_only=True)["env_state"]["episode_length"] > 0  # split mid-episode
    assert_same_checkpoint(tmp_path / "long.pt", tmp_path / "r2.pt")
    assert store_array_files(tmp_path / "long.zarr") == store_array_files(tmp_path / "r2.zarr")
    # round 1's chunk files reappear unchanged in round 2's store (DVC dedupes them)
    first = store_array_files(tmp_path / "r1.zarr")
    second = store_array_files(tmp_path / "r2.zarr")
    assert all(second[k] == v for k, v in first.items() if "/c/" in k)
    assert r2["env_steps_total"] == long["env_steps_total"] == 2 * K
    assert r1["gradient_steps"] + r2["gradient_steps"] == long["gradient_steps"] == 2 * K - 60 + 1
    data, attrs = read_store(tmp_path / "r2.zarr")
    assert len(data) == 2 * K and attrs["round"] == 2 and attrs["kind"] == "online"
    drawn = r2["data_drawn"]
    assert drawn["synthetic_online"] > drawn["synthetic_offline"] > 0
    if apl:
        assert r2["apl_batches"]["online"] > 0 and r2["apl_batches"]["offline"] > 0
    else:
        assert r2["data_fractions"]["online"] == pytest.approx(1 / 3, abs=0.02)
    json.dumps(r2)


def test_empty_synthetic_store_is_exactly_the_base_algorithm(pretrained, hopper_store, tmp_path):
    empty = rollouts(1, lambda o, rng: rng.uniform(-1, 1, 3), seed=0).take(slice(0, 0))
    empty = Transitions.from_arrays({**empty.arrays(), "labels": np.zeros(0, np.uint8)})
    syn = write_store(tmp_path / "empty.zarr", empty, StoreMeta(kind="synthetic", env_id="Hopper-v5", source="t"))
    cfg = rollout_cfg(K)
    base = run_round(pretrained["iql"], hopper_store, None, None, cfg, tmp_path / "a.pt", tmp_path / "a.zarr", 1, False)
    with_empty = run_round(
        pretrained["iql"], hopper_store, None, syn, cfg, tmp_path / "b.pt", tmp_path / "b.zarr", 1, False
    )
    assert_same_checkpoint(tmp_path / "a.pt", tmp_path / "b.pt")
    assert store_array_files(tmp_path / "a.zarr") == store_array_files(tmp_path / "b.zarr")
    assert base["data_drawn"] == with_empty["data_drawn"] and with_empty["synthetic_rows"] == 0


def test_rerun_from_input_checkpoint_gives_identical_outputs(pretrained, hopper_store, tmp_path):
    cfg = rollout_cfg(K)
    run_round(pretrained["pex"], hopper_store, None, None, cfg, tmp_path / "a.pt", tmp_path / "a.zarr", 1, False)
    run_round(pretrained["pex"], hopper_store, None, None, cfg, tmp_path / "b.pt", tmp_path / "b.zarr", 1, False)
    assert digest(tmp_path / "a.pt") == digest(tmp_path / "b.pt")
    assert digest(tmp_path / "a.zarr") == digest(tmp_path / "b.zarr")
    ckpt = torch.load(tmp_path / "a.pt", weights_only=True)  # plain tensors and python data only
    assert ckpt["algo"] == "pex" and ckpt["env"] == "hopper" and ckpt["agent"]["phase"] == "online"
    assert ckpt["env_state"]["elapsed_steps"] >= 0 and isinstance(ckpt["rng"]["numpy"][1], list)


def test_checkpoint_from_another_algorithm_env_or_run_is_rejected(pretrained, hopper_store, tmp_path):
    cfg = rollout_cfg(K)
    with pytest.raises(CheckpointError, match="algorithm 'iql', not 'apl'"):
        run_round(
            pretrained["iql"],
            hopper_store,
            None,
            None,
            cfg,
            tmp_path / "x.pt",
            tmp_path / "x.zarr",
            1,
            False,
            algo="apl",
        )
    cheetah = write_store(
        tmp_path / "cheetah.zarr",
        make_transitions(64, obs_dim=17, act_dim=6),
        StoreMeta(kind="offline", env_id="HalfCheetah-v5", source="t"),
    )
    with pytest.raises(CheckpointError, match="env 'hopper', not 'halfcheetah'"):
        run_round(pretrained["iql"], cheetah, None, None, cfg, tmp_path / "x.pt", tmp_path / "x.zarr", 1, False)
    run_round(pretrained["iql"], hopper_store, None, None, cfg, tmp_path / "r1.pt", tmp_path / "r1.zarr", 1, False)
    with pytest.raises(CheckpointError, match="pass the online store"):
        run_round(tmp_path / "r1.pt", hopper_store, None, None, cfg, tmp_path / "x.pt", tmp_path / "x.zarr", 2, False)
    with pytest.raises(CheckpointError, match="not from the same run"):
        run_round(
            pretrained["iql"],
            hopper_store,
            tmp_path / "r1.zarr",
            None,
            cfg,
            tmp_path / "x.pt",
            tmp_path / "x.zarr",
            2,
            False,
        )
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")
    assert not (tmp_path / "x.pt").exists() and not (tmp_path / "x.zarr").exists()


def test_online_config_requires_chunk_rows_dividing_steps():
    with pytest.raises(ConfigError, match="chunk_rows"):
        from_mapping(RolloutConfig, {"steps": 100, "chunk_rows": 30}, "rollout")


def test_cli_pretrain_and_round_errors(hopper_store, pretrained, tmp_path, capsys):
    from cfdg.cli import main

    out = tmp_path / "cli.pt"
    args = [
        "agent",
        "pretrain",
        str(hopper_store),
        "--out",
        str(out),
        "--no-progress",
        "--metrics",
        str(tmp_path / "m.json"),
    ]
    sets = ["--set", "agent.algo=apl", "--set", "agent.hidden_dims=[16,16]", "--set", "pretrain.steps=5"]
    assert main([*args, *sets, "--set", "pretrain.eval_episodes=1"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["algo"] == "apl"
    assert load_checkpoint(out, algo="apl")["agent_config"]["hidden_dims"] == [16, 16]
    round_args = ["agent", "round", str(pretrained["iql"]), str(hopper_store), "--round", "1", "--no-progress"]
    round_args += ["--out", str(tmp_path / "r.pt"), "--out-online-store", str(tmp_path / "r.zarr")]
    assert main([*round_args, "--set", "agent.algo=apl"]) == 2
    assert "checkpoint is for algorithm 'iql', not 'apl'" in capsys.readouterr().err
    assert main([*round_args, "--set", "rollout.stepz=3"]) == 2
    assert "rollout: unknown key(s) ['stepz']" in capsys.readouterr().err


def test_apl0_explore_train_cycles_count_and_resume_bit_for_bit(pretrained, hopper_store, tmp_path):
    """APL0's schedule: after every `train_every` env steps, utd·train_every updates; the cycle
    position is the env-step count, so two rounds equal one double round bit for bit."""
    cyc = {"train_every": 30, "utd": 2, "warmup_steps": 1, "online_buffer_size": 100}
    long = run_round(
        pretrained["apl"],
        hopper_store,
        None,
        None,
        rollout_cfg(2 * K, **cyc),
        tmp_path / "l.pt",
        tmp_path / "l.zarr",
        1,
        False,
    )
    r1 = run_round(
        pretrained["apl"],
        hopper_store,
        None,
        None,
        rollout_cfg(K, **cyc),
        tmp_path / "a.pt",
        tmp_path / "a.zarr",
        1,
        False,
    )
    r2 = run_round(
        tmp_path / "a.pt",
        hopper_store,
        tmp_path / "a.zarr",
        None,
        rollout_cfg(K, **cyc),
        tmp_path / "b.pt",
        tmp_path / "b.zarr",
        2,
        False,
    )
    assert long["gradient_steps"] == (2 * K // 30) * 60  # whole cycles only, 60 updates each
    assert r1["gradient_steps"] == (K // 30) * 60
    assert r1["gradient_steps"] + r2["gradient_steps"] == long["gradient_steps"]
    assert_same_checkpoint(tmp_path / "l.pt", tmp_path / "b.pt")


def test_apl_checkpoint_names_its_engine_and_loads_only_as_it(pretrained, hopper_store, tmp_path):
    """The CQL form's checkpoint says `cql`, TD3+BC's `td3bc`; asking for the other is refused, and a
    checkpoint whose config and state disagree is refused before any agent is built."""
    for name, engine, other in (("apl", "td3bc", "cql"), ("apl-cql", "cql", "td3bc")):
        ckpt = load_checkpoint(pretrained[name], algo="apl", apl_engine=engine)
        assert ckpt["agent"]["engine"] == engine == ckpt["agent_config"]["apl_engine"]
        assert type(agent_from_checkpoint(ckpt, pretrained[name])).engine == engine
        with pytest.raises(CheckpointError, match=f"APL on the {engine} engine, not {other}"):
            load_checkpoint(pretrained[name], apl_engine=other)
    outs = (tmp_path / "x.pt", tmp_path / "x.zarr", 1, False)
    with pytest.raises(CheckpointError, match="APL on the td3bc engine, not cql"):  # params.yaml against the artifact
        run_round(pretrained["apl"], hopper_store, None, None, rollout_cfg(K), *outs, algo="apl", apl_engine="cql")
    ckpt = torch.load(pretrained["apl-cql"], weights_only=True)
    ckpt["agent_config"]["apl_engine"] = "td3bc"
    torch.save(ckpt, tmp_path / "forged.pt")
    with pytest.raises(CheckpointError, match="agent.engine is 'cql' but agent_config.apl_engine is 'td3bc'"):
        load_checkpoint(tmp_path / "forged.pt")


def test_pex_regresses_on_the_expanded_policys_actions(pretrained, hopper_store):
    """PEX's policy_update: AWR targets are the expanded policy's picks (offline mean or new sample)."""
    ckpt = load_checkpoint(pretrained["pex"])
    agent = agent_from_checkpoint(ckpt, pretrained["pex"])
    data, _ = read_store(hopper_store)
    obs = agent.norm(torch.as_tensor(data.observations[:64]))
    act = torch.as_tensor(data.actions[:64])
    adv = torch.zeros(64)
    v = agent.vf(obs).detach()
    same_act, same_adv = agent.awr_targets(obs, act, adv, v)  # offline phase: plain IQL
    assert torch.equal(same_act, act) and torch.equal(same_adv, adv)
    agent.start_online()
    chosen, chosen_adv = agent.awr_targets(obs, act, adv, v)
    assert not torch.allclose(chosen, act)  # not the batch's actions
    assert (chosen.abs() <= agent.max_action).all()
    expected = agent.target_critic.min(obs, chosen) - v
    torch.testing.assert_close(chosen_adv, expected)


@pytest.mark.parametrize(("threshold", "online_batches"), [(K // 2, True), (K, False)])
def test_apl_round_one_trains_on_online_batches_once_past_threshold(
    pretrained, hopper_store, tmp_path, threshold, online_batches
):
    """APL0's rule: online-side batches only once the online buffer holds more than `online_threshold`
    rows. A threshold equal to the round length (the hopper study's 10K) leaves round 1 offline-only;
    one below it gives round 1 online updates (the cheetah-random study's 5000 of 10K)."""
    cfg = rollout_cfg(K, online_threshold=threshold, warmup_steps=10)
    m = run_round(pretrained["apl"], hopper_store, None, None, cfg, tmp_path / "a.pt", tmp_path / "a.zarr", 1, False)
    assert m["gradient_steps"] > 0
    assert (m["apl_batches"]["online"] > 0) is online_batches
    assert m["apl_batches"]["offline"] > 0
