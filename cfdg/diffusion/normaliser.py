"""The modelled vector and its standardisation.

Vector = concat(obs, action, reward, next_obs, terminal). Every dimension but the terminal is
standardised with statistics of the training data (std floored so constant dimensions stay
finite); the terminal flag keeps its 0/1 values and is thresholded at 0.5 after sampling.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cfdg.store import Transitions

STD_FLOOR = 1e-6


def vector_dim(obs_dim: int, act_dim: int) -> int:
    return 2 * obs_dim + act_dim + 2


def to_vectors(data: Transitions) -> np.ndarray:
    """[N, 2·obs + act + 2] float32 rows: obs, action, reward, next_obs, terminal."""
    return np.concatenate(
        [
            data.observations,
            data.actions,
            data.rewards[:, None],
            data.next_observations,
            data.terminals[:, None].astype(np.float32),
        ],
        axis=1,
        dtype=np.float32,
    )


def from_vectors(v: np.ndarray, obs_dim: int, act_dim: int, labels: np.ndarray | None = None) -> Transitions:
    """Inverse of `to_vectors`; terminal = v > 0.5, timeouts all False (generated rows end no episode by time)."""
    o, a = obs_dim, act_dim
    n = v.shape[0]
    return Transitions.from_arrays(
        {
            "observations": v[:, :o],
            "actions": v[:, o : o + a],
            "rewards": v[:, o + a],
            "next_observations": v[:, o + a + 1 : 2 * o + a + 1],
            "terminals": v[:, -1] > 0.5,
            "timeouts": np.zeros(n, bool),
            **({} if labels is None else {"labels": labels}),
        },
        where="generated transitions",
    )


@dataclasses.dataclass(frozen=True)
class Normaliser:
    """Per-dimension mean/std (float32 [d]); the terminal dimension has mean 0, std 1."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, vectors: np.ndarray, weights: np.ndarray | None = None) -> Normaliser:
        """Statistics of the rows, or of the distribution the fit draws them from (`weights`, per row)."""
        x = vectors.astype(np.float64)
        mean = np.average(x, axis=0, weights=weights)
        std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=weights))
        std = np.where(std < STD_FLOOR, 1.0, std)
        mean[-1], std[-1] = 0.0, 1.0
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def normalise(self, vectors: np.ndarray) -> np.ndarray:
        return ((vectors - self.mean) / self.std).astype(np.float32)

    def denormalise(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors * self.std + self.mean).astype(np.float32)
