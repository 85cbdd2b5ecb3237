"""Store helpers of the stages: empty stores (round 0, variant none) and a store's dimensions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cfdg import store
from cfdg.store import Transitions


def empty_transitions(obs_dim: int, act_dim: int, labels: bool) -> Transitions:
    f = np.float32
    return Transitions(
        observations=np.zeros((0, obs_dim), f),
        actions=np.zeros((0, act_dim), f),
        rewards=np.zeros(0, f),
        next_observations=np.zeros((0, obs_dim), f),
        terminals=np.zeros(0, bool),
        timeouts=np.zeros(0, bool),
        labels=np.zeros(0, np.uint8) if labels else None,
    )


def store_dims(path: Path) -> tuple[int, int]:
    arrays = store.info(path)["arrays"]
    return int(arrays["observations"]["shape"][1]), int(arrays["actions"]["shape"][1])
