"""Random transitions of any size: data for tests and benchmarks that need stores, not learning."""

from __future__ import annotations

import numpy as np

from cfdg.store import Transitions


def make_transitions(n: int, obs_dim: int = 5, act_dim: int = 3, seed: int = 0, labels: bool = False) -> Transitions:
    """`n` rows of Gaussian states/rewards, uniform actions, 5% terminals; `labels`: 80% online."""
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
