"""Shared fixtures: small real transition data and stores in temporary directories."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from cfdg.fake_data import make_transitions
from cfdg.store import StoreMeta, Transitions

__all__ = ["make_transitions"]  # tests import it from here


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
