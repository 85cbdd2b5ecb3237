"""Quality of generated transitions: Jensen-Shannon divergence to real online data (paper 3.1, Table 2).

The one quality module: the estimators below, and `measure_quality`, what materialise@k records for
a round's synthetic store (alignment, simulator fidelity, memorisation), so the stage only calls it.

Two estimators, in nats (0 = same distribution, ln 2 ≈ 0.693 = disjoint supports):
- `classifier`: a held-out two-sample estimate. With balanced classes the Bayes-optimal
  discriminator's cross-entropy is ln 2 − JS, so any trained discriminator's held-out
  cross-entropy CE gives the lower bound JS ≥ ln 2 − CE (clipped to [0, ln 2]). Gradient-boosted
  trees are the discriminator: fast, scale-free and able to pick up non-linear differences.
- `histogram`: per-dimension histogram JS on shared bin edges, averaged over dimensions. It
  ignores dependence between dimensions but is cheap, assumption-light and easy to read.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from cfdg import store
from cfdg.config import check
from cfdg.envs import GYM_IDS, env_name
from cfdg.errors import CfdgError, StoreError
from cfdg.fidelity import simulator_fidelity
from cfdg.store import Transitions

LN2 = math.log(2.0)
N_BINS = 32
PARTS = ("state", "action", "transition")


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """How generated data is compared with real online data (params `quality:`, docs/quality.md)."""

    max_rows: int = 5000  # rows per side given to the JS estimators
    seed: int = 0
    # rows replayed in the simulator per data set (cfdg.fidelity; ~1 s per 2000 hopper rows) and
    # matched for the memorisation ratio; 0 turns both off
    fidelity_rows: int = 2000

    def __post_init__(self) -> None:
        check(self.max_rows >= 10, "quality.max_rows", f"must be >= 10, got {self.max_rows}")
        check(self.fidelity_rows >= 0, "quality.fidelity_rows", f"must be >= 0, got {self.fidelity_rows}")


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


# --- Memorisation and alignment to rows the model never saw -------------------------------------


def transition_vectors(data: Transitions) -> np.ndarray:
    """(s, a, r, s') per row in float64, the vector the memorisation check measures distances on."""
    return part_arrays(data)["transition"].astype(np.float64)


def episode_ids(data: Transitions) -> np.ndarray:
    """Episode index of each row of a store kept in collection order (an episode ends at terminal|timeout)."""
    ends = (data.terminals | data.timeouts).astype(np.int64)
    return np.concatenate([[0], np.cumsum(ends[:-1])]) if len(data) else np.zeros(0, np.int64)


def nearest_distances(
    queries: np.ndarray,
    reference: np.ndarray,
    query_groups: np.ndarray | None = None,
    reference_groups: np.ndarray | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """Exact Euclidean distance from each query row to its nearest reference row (torch.cdist in chunks).

    With groups, reference rows of the query's own group are ignored (leave-one-group-out).
    Float64 and no matmul shortcut, so the result does not depend on the thread count.
    """
    import torch

    ref = torch.from_numpy(np.ascontiguousarray(reference, dtype=np.float64))
    ref_g = None if reference_groups is None else torch.from_numpy(np.asarray(reference_groups, np.int64))
    out = np.empty(len(queries))
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk], dtype=np.float64))
        d = torch.cdist(q, ref, compute_mode="donot_use_mm_for_euclid_dist")
        if ref_g is not None and query_groups is not None:
            qg = torch.from_numpy(np.asarray(query_groups[start : start + chunk], np.int64))
            d = d.masked_fill(qg[:, None] == ref_g[None, :], float("inf"))
        out[start : start + len(q)] = d.min(dim=1).values.numpy()
    return out


def memorisation_ratio(
    generated: Transitions,
    training: Transitions,
    held_out: Transitions | None = None,
    max_rows: int = 2000,
    max_training_rows: int = 50_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Median NN distance generated → training over held-out real → training (≈ 1 healthy, ≪ 1 copying).

    Distances are on (s, a, r, s') vectors standardised by the training rows' mean and std. Up to
    `max_rows` generated and held-out rows (seeded sample) are matched exactly against up to
    `max_training_rows` training rows. `held_out`: real rows the model never saw (e.g. the next
    round's fresh transitions). Without it, whole episodes are left out one at a time: each sampled
    training row is matched against the training rows of OTHER episodes, which is what a held-out
    episode of the same buffer would see, so the fit needs no hold-out (`training` in collection order).
    Numbers only (DVC metrics): ratio, generated_median_nn, reference_median_nn, rows.
    """
    for name, d in (("generated", generated), ("training", training)):
        if len(d) < 2:
            raise StoreError(f"memorisation_ratio: {name} has {len(d)} rows; at least 2 are needed")
    rng = np.random.default_rng(seed)
    train_idx = _sample(rng, len(training), max_training_rows)
    train = transition_vectors(training)
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    ref = (train[train_idx] - mean) / std
    gen = (transition_vectors(generated.take(_sample(rng, len(generated), max_rows))) - mean) / std
    gen_nn = nearest_distances(gen, ref)
    if held_out is not None:
        if len(held_out) < 2:
            raise StoreError(f"memorisation_ratio: held_out has {len(held_out)} rows; at least 2 are needed")
        held = (transition_vectors(held_out.take(_sample(rng, len(held_out), max_rows))) - mean) / std
        held_nn = nearest_distances(held, ref)
    else:
        episodes = episode_ids(training)
        if len(np.unique(episodes[train_idx])) < 2:
            raise StoreError("memorisation_ratio: training holds one episode; leave-one-episode-out needs two")
        pick = train_idx[_sample(rng, len(train_idx), max_rows)]
        held_nn = nearest_distances((train[pick] - mean) / std, ref, episodes[pick], episodes[train_idx])
    gen_med, held_med = float(np.median(gen_nn)), float(np.median(held_nn))
    return {
        "ratio": gen_med / max(held_med, 1e-12),
        "generated_median_nn": gen_med,
        "reference_median_nn": held_med,
        "rows": {"generated": len(gen_nn), "reference": len(held_nn), "training": len(train_idx)},
    }


def _sample(rng: np.random.Generator, n: int, cap: int) -> np.ndarray:
    return np.sort(rng.choice(n, cap, replace=False)) if n > cap else np.arange(n)


def fresh_rows(previous: Transitions, current: Transitions) -> Transitions:
    """Rows of the online store of round k+1 that round k's store did not hold (the online store only grows)."""
    n = len(previous)
    if len(current) < n or not np.array_equal(current.observations[:n], previous.observations):
        raise StoreError(
            f"fresh_rows: the later online store ({len(current)} rows) does not start with the earlier one ({n} rows)"
        )
    return current.take(slice(n, None))


# --- What materialise@k records for a round's synthetic store --------------------------------------


def measure_quality(
    offline: str | os.PathLike, online: str | os.PathLike, synthetic: str | os.PathLike, cfg: QualityConfig, k: int
) -> dict[str, Any]:
    """Alignment (JS to the round's online data), fidelity (simulator) and memorisation of round k's store.

    Fidelity is measured on the online-labelled generated rows, the whole store, and, as baselines
    that must score ≈ 0, the real online and offline rows. Memorisation compares the online-labelled
    rows with the round's online rows, leaving whole episodes out for the reference (no fit hold-out).
    """
    real_online, _ = store.read_store(online)
    real_offline, _ = store.read_store(offline)
    generated, _ = store.read_store(synthetic)
    quality: dict[str, Any] = {
        "round": k,
        "rows": {"offline": len(real_offline), "online": len(real_online), "generated": len(generated)},
        "offline_vs_online": js_divergences(real_online, real_offline, seed=cfg.seed, max_rows=cfg.max_rows),
    }
    online_like = None
    if len(generated):
        # Table 2 compares the samples meant to look like online data: the online-labelled ones.
        # The whole store (20% offline-labelled for cfdg) is what the agent sees; both are kept.
        online_like = generated.take(generated.labels == store.LABEL_ONLINE)
        quality["rows"]["generated_online"] = len(online_like)
        if len(online_like):
            quality["generated_vs_online"] = js_divergences(
                real_online, online_like, seed=cfg.seed, max_rows=cfg.max_rows
            )
        quality["generated_all_vs_online"] = js_divergences(
            real_online, generated, seed=cfg.seed, max_rows=cfg.max_rows
        )
    quality.update(
        ground_truth(store.read_attrs(online)["env_id"], real_offline, real_online, generated, online_like, cfg)
    )
    return quality


def ground_truth(
    env_id: str,
    offline: Transitions,
    online: Transitions,
    generated: Transitions,
    online_like: Transitions | None,
    cfg: QualityConfig,
) -> dict[str, Any]:
    """{"fidelity": {...}, "memorisation": {...}} where measurable (a MuJoCo env, rows present)."""
    out: dict[str, Any] = {}
    if cfg.fidelity_rows == 0:
        return out
    try:
        env = env_name(env_id)
    except CfdgError:
        return out
    if env in GYM_IDS:
        parts = {"generated": online_like, "generated_all": generated, "online": online, "offline": offline}
        out["fidelity"] = {
            name: simulator_fidelity(data, env, max_rows=cfg.fidelity_rows, seed=cfg.seed)
            for name, data in parts.items()
            if data is not None and len(data)
        }
    if online_like is not None and len(online_like) >= 2 and len(np.unique(episode_ids(online))) >= 2:
        out["memorisation"] = memorisation_ratio(online_like, online, max_rows=cfg.fidelity_rows, seed=cfg.seed)
    return out


def fresh_quality(
    online: Transitions, later_online: Transitions, offline: Transitions, generated: Transitions, cfg: QualityConfig
) -> dict[str, Any] | None:
    """Round k's data against round k+1's fresh online rows, which no model of round k saw (None: < 20 fresh rows).

    State/action/transition JS of the fresh rows to round k's real online buffer, the offline data and
    round k's online-labelled samples, and the memorisation ratio with the fresh rows as the held-out
    reference. This is what the agent's next data will look like.
    """
    fresh = fresh_rows(online, later_online)
    if len(fresh) < 20:
        return None
    seed, rows = cfg.seed, cfg.max_rows
    result: dict[str, Any] = {
        "rows": {"fresh": len(fresh)},
        "online_vs_fresh": js_divergences(fresh, online, seed=seed, max_rows=rows),
        "offline_vs_fresh": js_divergences(fresh, offline, seed=seed, max_rows=rows),
    }
    if len(generated):
        online_like = generated.take(generated.labels == store.LABEL_ONLINE)
        if len(online_like) >= 20:
            result["generated_vs_fresh"] = js_divergences(fresh, online_like, seed=seed, max_rows=rows)
            if cfg.fidelity_rows:
                result["memorisation"] = memorisation_ratio(
                    online_like, online, fresh, max_rows=cfg.fidelity_rows, seed=seed
                )
    return result
