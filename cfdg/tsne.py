"""A t-SNE picture of offline, online and generated transitions (the paper's Figure 1)."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from cfdg.io import atomic_write_bytes

# The paper's roles get fixed colours so pictures from different rounds compare at a glance.
COLOURS = {"offline": "#1f77b4", "online": "#ff7f0e", "generated": "#2ca02c", "synthetic": "#2ca02c"}
FALLBACK = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]


def tsne_plot(
    groups: Mapping[str, np.ndarray],
    out_png: str | os.PathLike,
    seed: int = 0,
    max_per_group: int = 1000,
    title: str = "",
) -> Path:
    """Embed up to `max_per_group` rows of each group (seeded subsample) jointly, standardised on the pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if not groups:
        raise ValueError("tsne_plot: no groups given")
    widths = {name: np.asarray(x).shape[1] for name, x in groups.items()}
    if len(set(widths.values())) != 1:
        raise ValueError(f"tsne_plot: groups have different widths {widths}")
    rng = np.random.default_rng(seed)
    names, parts = [], []
    for name, x in groups.items():
        x = np.asarray(x, np.float64)
        if len(x) > max_per_group:
            x = x[np.sort(rng.choice(len(x), max_per_group, replace=False))]
        names.append(name)
        parts.append(x)
    pooled = np.concatenate(parts)
    std = pooled.std(axis=0)
    pooled = (pooled - pooled.mean(axis=0)) / np.where(std > 1e-8, std, 1.0)
    perplexity = float(min(30.0, max(2.0, (len(pooled) - 1) / 3)))
    # One thread: a few thousand points embed in seconds, and OpenMP spin-waits on a busy
    # machine made it ~10x slower (measured); one thread also keeps the picture reproducible.
    with threadpool_limits(1):
        emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(pooled)

    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    start, fallback = 0, iter(FALLBACK)
    for name, x in zip(names, parts, strict=True):
        e = emb[start : start + len(x)]
        start += len(x)
        ax.scatter(e[:, 0], e[:, 1], s=4, alpha=0.6, color=COLOURS.get(name) or next(fallback), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    ax.legend(markerscale=3, frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return atomic_write_bytes(out_png, buf.getvalue())
