"""Quality of generated transitions: Jensen-Shannon divergence to real online data (paper 3.1, Table 2).

Two estimators, in nats (0 = same distribution, ln 2 ≈ 0.693 = disjoint supports):
- `classifier`: a held-out two-sample estimate. With balanced classes the Bayes-optimal
  discriminator's cross-entropy is ln 2 − JS, so any trained discriminator's held-out
  cross-entropy CE gives the lower bound JS ≥ ln 2 − CE (clipped to [0, ln 2]). Gradient-boosted
  trees are the discriminator: fast, scale-free and able to pick up non-linear differences.
- `histogram`: per-dimension histogram JS on shared bin edges, averaged over dimensions. It
  ignores dependence between dimensions but is cheap, assumption-light and easy to read.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from cfdg.errors import StoreError
from cfdg.store import Transitions

LN2 = math.log(2.0)
N_BINS = 32
PARTS = ("state", "action", "transition")


def part_arrays(data: Transitions) -> dict[str, np.ndarray]:
    """state = s, action = a, transition = (s, a, r, s') as in the paper's Table 2."""
    return {
        "state": data.observations,
        "action": data.actions,
        "transition": np.concatenate(
            [data.observations, data.actions, data.rewards[:, None], data.next_observations], axis=1
        ),
    }


def classifier_js(a: np.ndarray, b: np.ndarray, seed: int = 0) -> float:
    """ln 2 − held-out cross-entropy of a discriminator trained on half of each (equal-size) sample."""
    n = min(len(a), len(b))
    half = n // 2
    x_train = np.concatenate([a[:half], b[:half]])
    y_train = np.concatenate([np.zeros(half), np.ones(half)])
    x_test = np.concatenate([a[half:n], b[half:n]])
    y_test = np.concatenate([np.zeros(n - half), np.ones(n - half)])
    clf = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.1, early_stopping=True, validation_fraction=0.15, random_state=seed
    )
    # One thread: at <= 20K rows per side threading gains little, and on a shared or busy
    # machine OpenMP spin-waits make it 10-20x slower (measured).
    with threadpool_limits(1):
        clf.fit(x_train, y_train)
        p = np.clip(clf.predict_proba(x_test)[:, 1], 1e-7, 1 - 1e-7)
    ce = -np.mean(y_test * np.log(p) + (1 - y_test) * np.log(1 - p))
    return float(np.clip(LN2 - ce, 0.0, LN2))


def histogram_js(a: np.ndarray, b: np.ndarray, bins: int = N_BINS) -> float:
    """Mean over dimensions of the JS divergence between per-dimension histograms.

    Edges span the pooled 0.5–99.5% quantiles (outliers fall into the end bins), shared by both samples.
    """
    total = 0.0
    for j in range(a.shape[1]):
        pooled = np.concatenate([a[:, j], b[:, j]]).astype(np.float64)
        lo, hi = np.quantile(pooled, [0.005, 0.995])
        if not hi > lo:
            lo, hi = pooled.min(), pooled.max()
        if not hi > lo:
            continue  # constant in both samples: identical marginals
        edges = np.linspace(lo, hi, bins + 1)
        p = np.histogram(np.clip(a[:, j], lo, hi), edges)[0].astype(np.float64)
        q = np.histogram(np.clip(b[:, j], lo, hi), edges)[0].astype(np.float64)
        total += _js(p / p.sum(), q / q.sum())
    return total / a.shape[1]


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = 0.5 * (p + q)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / m[nz])))

    return 0.5 * kl(p) + 0.5 * kl(q)


def js_divergences(reference: Transitions, candidate: Transitions, seed: int = 0, max_rows: int = 20000) -> dict:
    """{'state'|'action'|'transition': {'classifier': nats, 'histogram': nats}}; deterministic for a seed.

    Both samples are subsampled (seeded) to the same size, at most `max_rows` rows each.
    """
    for name, d in (("reference", reference), ("candidate", candidate)):
        if len(d) < 20:
            raise StoreError(f"js_divergences: {name} has {len(d)} rows; at least 20 are needed")
    if (reference.obs_dim, reference.act_dim) != (candidate.obs_dim, candidate.act_dim):
        raise StoreError(
            f"js_divergences: reference obs/act dims {reference.obs_dim}/{reference.act_dim} differ from "
            f"candidate {candidate.obs_dim}/{candidate.act_dim}"
        )
    rng = np.random.default_rng(seed)
    n = min(len(reference), len(candidate), max_rows)
    ref = part_arrays(reference.take(np.sort(rng.choice(len(reference), n, replace=False))))
    cand = part_arrays(candidate.take(np.sort(rng.choice(len(candidate), n, replace=False))))
    out = {}
    for part in PARTS:
        a, b = ref[part], cand[part]
        # Shuffle rows so the classifier's train/test halves are exchangeable.
        a, b = a[rng.permutation(n)], b[rng.permutation(n)]
        out[part] = {"classifier": classifier_js(a, b, seed), "histogram": histogram_js(a, b)}
    return out
