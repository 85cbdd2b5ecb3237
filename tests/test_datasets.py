"""Dataset building on real MuJoCo envs with a tiny TD3 budget: structure, card, determinism, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cfdg.cli import main
from cfdg.config import from_mapping
from cfdg.datasets.build import DatasetConfig, build_dataset
from cfdg.envs import normalized_score
from cfdg.errors import ConfigError
from cfdg.store import read_store

TINY = {
    "medium_steps": 240,
    "expert_steps": 360,
    "transitions": 200,
    "start_steps": 80,
    "eval_every": 120,
    "eval_episodes": 1,
    "batch_size": 32,
    "hidden": 32,
    "max_episode_steps": 40,
    "device": "cpu",
}


def tiny(kind: str, **kw) -> DatasetConfig:
    return from_mapping(DatasetConfig, {"env": "hopper", "kind": kind, **TINY, **kw}, "dataset")


def episodes(t) -> list[np.ndarray]:
    ends = np.flatnonzero(t.terminals | t.timeouts)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [np.arange(s, e + 1) for s, e in zip(starts, ends, strict=True)]


def check_structure(t, max_steps: int) -> None:
    """D4RL semantics with stored s': rows chain within episodes, flags only at episode ends."""
    assert t.obs_dim == 11 and t.act_dim == 3
    assert not (t.terminals & t.timeouts).any()
    assert t.terminals[-1] or t.timeouts[-1]  # every row belongs to a closed episode
    assert np.abs(t.actions).max() <= 1.0
    for ep in episodes(t):
        np.testing.assert_array_equal(t.observations[ep[1:]], t.next_observations[ep[:-1]])
        assert len(ep) <= max_steps
    # Hopper terminates when unhealthy: height <= 0.7, |angle| >= 0.2 or a state entry out of [-100, 100].
    z, angle, rest = t.next_observations[:, 0], t.next_observations[:, 1], t.next_observations[:, 1:]
    unhealthy = (z <= 0.7) | (np.abs(angle) >= 0.2) | (np.abs(rest) >= 100).any(1)
    np.testing.assert_array_equal(t.terminals, unhealthy)


def test_medium_replay_structure_card_and_store(tmp_path):
    cfg = tiny("medium-replay")
    card = build_dataset(cfg, tmp_path / "d.zarr", tmp_path / "card.json", progress=False)
    data, attrs = read_store(tmp_path / "d.zarr")
    assert attrs["kind"] == "offline" and attrs["env_id"] == "hopper" and attrs["seed"] == 0
    assert attrs["source"] == "cfdg-built:hopper-medium-replay"
    assert attrs["params"]["medium_steps"] == 240
    assert len(data) == 240  # the whole training replay (target not reached in 240 steps)
    check_structure(data, 40)
    assert data.terminals.sum() > 0 and data.timeouts.sum() > 0
    assert json.loads((tmp_path / "card.json").read_text()) == card
    assert card["size"] == 240 and card["obs_dim"] == 11 and card["act_dim"] == 3
    assert [c["step"] for c in card["training_curve"]] == [120, 240]
    # Card returns = finished episodes' reward sums (the last, cut episode excluded).
    eps = episodes(data)
    closed = eps[:-1] if not data.terminals[-1] and card["episodes"] == len(eps) - 1 else eps
    sums = [float(data.rewards[ep].astype(np.float64).sum()) for ep in closed]
    assert card["episodes"] == len(sums)
    assert card["returns"]["mean"] == pytest.approx(np.mean(sums), rel=1e-5)
    assert card["returns"]["normalized_mean"] == pytest.approx(normalized_score("hopper", np.mean(sums)), rel=1e-5)


def test_build_is_byte_identical_for_a_seed(tmp_path):
    import torch

    threads = torch.get_num_threads()
    cfg = tiny("medium-expert", transitions=100)
    assert cfg.torch_threads == 1  # the default: no stalls on a busy machine
    cards = [build_dataset(cfg, tmp_path / d / "s.zarr", tmp_path / d / "card.json", progress=False) for d in "ab"]
    files = {d: sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*") if p.is_file()) for d in "ab"}
    assert files["a"] == files["b"] and len(files["a"]) > 5
    for rel in files["a"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert cards[0] == cards[1]
    assert torch.get_num_threads() == threads  # torch_threads is scoped to the build
    data, _ = read_store(tmp_path / "a" / "s.zarr")
    assert len(data) == 200 and set(cards[0]["parts"]) == {"medium", "expert"}
    check_structure(data, 40)
    other = build_dataset(tiny("medium-expert", transitions=100, seed=1), tmp_path / "c.zarr", progress=False)
    assert other["returns"] != cards[0]["returns"]


def test_random_dataset_uses_uniform_actions(tmp_path):
    card = build_dataset(tiny("random", transitions=500), tmp_path / "r.zarr", progress=False)
    data, _ = read_store(tmp_path / "r.zarr")
    assert len(data) == 500 and card["training_curve"] == []
    check_structure(data, 40)
    assert data.actions.min() < -0.9 and data.actions.max() > 0.9
    assert abs(float(data.actions.mean())) < 0.1


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"kind": "expertish"}, "dataset.kind"),
        ({"env": "pong"}, "dataset.env"),
        ({"medium_steps": 0}, "dataset.medium_steps"),
        ({"medium_steps": 10, "expert_steps": 5}, "dataset.expert_steps"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_config_errors_name_the_key(mapping, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_mapping(DatasetConfig, mapping, "dataset")


def test_cli_build_and_errors(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    out = tmp_path / "r.zarr"
    sets = [f"--set={k}={v}" for k, v in {**TINY, "transitions": 100}.items()]
    rc = main(["dataset", "build", "--env", "hopper", "--kind", "random", "--out", str(out), "--no-progress", *sets])
    assert rc == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "r.zarr.card.json" in printed and "100 transitions" in printed
    assert json.loads((tmp_path / "r.zarr.card.json").read_text())["size"] == 100
    assert main(["dataset", "build", "--out", str(tmp_path / "x.zarr"), "--set", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["dataset", "import", "hopper-medium-v2", "--out", str(tmp_path / "y.zarr")]) == 2
    assert "hopper_medium-v2.hdf5" in capsys.readouterr().err
    assert not (tmp_path / "x.zarr").exists() and not (tmp_path / "y.zarr").exists()
