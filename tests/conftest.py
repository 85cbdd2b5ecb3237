"""Shared fixtures: small real transition data and stores in temporary directories."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from cfdg.store import StoreMeta, Transitions


def make_transitions(n: int, obs_dim: int = 5, act_dim: int = 3, seed: int = 0, labels: bool = False) -> Transitions:
    rng = np.random.default_rng(seed)
    return Transitions.from_arrays(
        {
            "observations": rng.normal(size=(n, obs_dim)),
            "actions": rng.uniform(-1, 1, size=(n, act_dim)),
            "rewards": rng.normal(size=n),
            "next_observations": rng.normal(size=(n, obs_dim)),
            "terminals": rng.random(n) < 0.05,
            "timeouts": np.zeros(n, bool),
            **({"labels": (rng.random(n) < 0.8).astype(np.uint8)} if labels else {}),
        }
    )


@pytest.fixture
def transitions() -> Transitions:
    return make_transitions(1000)


@pytest.fixture
def meta() -> StoreMeta:
    return StoreMeta(kind="offline", env_id="hopper", source="test", seed=0, params={"a": 1})


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' networks are tiny: one torch thread is faster and immune to a busy machine."""
    from cfdg.device import torch_threads

    with torch_threads(1):
        yield
