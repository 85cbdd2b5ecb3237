"""Shared fixtures: small real transition data and stores in temporary directories."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
if worker := os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers each start Prefect's temporary server: one SQLite database per worker, not
    # the user's ~/.prefect shared by two servers at once. It is kept between runs (migrated once).
    os.environ["PREFECT_HOME"] = str(Path(tempfile.gettempdir()) / f"cfdg-tests-prefect-{worker}")

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
