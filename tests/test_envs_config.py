"""D4RL score normalisation and typed config parsing."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from cfdg.config import check, from_mapping
from cfdg.envs import env_name, gym_id, make_env, normalized_score
from cfdg.errors import ConfigError


@pytest.mark.parametrize(
    ("env", "ret", "expected"),
    [
        # D4RL infos.py: REF_MIN gives 0, REF_MAX gives 100.
        ("hopper-medium-replay-v2", 3234.3, 100.0),
        ("hopper", -20.272305, 0.0),
        ("halfcheetah-medium-v2", 12135.0, 100.0),
        ("walker2d", 1.629008, 0.0),
        ("ant", 3879.7, 100.0),
        ("antmaze-large-diverse-v2", 0.5, 50.0),
        ("pen-human-v1", 96.262799, 0.0),
        ("door", 2880.5693087298737, 100.0),
        ("relocate", -6.425911, 0.0),
        ("hammer-human-v1", 12794.134825156867, 100.0),
        # A value D4RL users know: hopper return 1000 -> 31.35.
        ("hopper", 1000.0, 100 * (1000 + 20.272305) / (3234.3 + 20.272305)),
    ],
)
def test_normalized_score_matches_d4rl(env, ret, expected):
    assert normalized_score(env, ret) == pytest.approx(expected, abs=1e-9)


def test_env_names_resolve():
    assert env_name("Hopper-v5") == "hopper"
    assert env_name("walker2d-medium-expert-v2") == "walker2d"
    assert gym_id("halfcheetah") == "HalfCheetah-v5"
    with pytest.raises(ConfigError, match="unknown env 'pong'"):
        env_name("pong")
    with pytest.raises(ConfigError, match="gymnasium-robotics"):
        gym_id("antmaze")
    env = make_env("hopper", seed=0)
    assert env.observation_space.shape == (11,)


@dataclasses.dataclass(frozen=True)
class Cfg:
    lr: float = 3e-4
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1, 2)
    name: str | None = None

    def __post_init__(self) -> None:
        check(self.lr > 0, "Cfg.lr", f"must be > 0, got {self.lr}")


def test_from_mapping_parses_and_rejects():
    c = from_mapping(Cfg, {"lr": 1, "sizes": [3, 4], "mode": "b"}, "section")
    assert c == Cfg(lr=1.0, sizes=(3, 4), mode="b")
    with pytest.raises(ConfigError, match=r"section: unknown key\(s\) \['lrr'\]"):
        from_mapping(Cfg, {"lrr": 1}, "section")
    with pytest.raises(ConfigError, match=r"section.steps: must be an integer, got 'x'"):
        from_mapping(Cfg, {"steps": "x"}, "section")
    with pytest.raises(ConfigError, match=r"section.mode: must be one of \['a', 'b'\]"):
        from_mapping(Cfg, {"mode": "c"}, "section")
    with pytest.raises(ConfigError, match="Cfg.lr: must be > 0"):
        from_mapping(Cfg, {"lr": -1}, "section")
    with pytest.raises(ConfigError, match="must be finite"):
        from_mapping(Cfg, {"lr": float("nan")}, "section")
