"""Fit steps/s of the default-size denoiser (256x3, batch 256) with 1 vs 2 torch threads, interleaved.

Why `diffusion.threads` / `sampling.threads` default to 1 in params.yaml: on a shared 2-core CPU,
two intra-op threads beside any other busy process make small GEMMs wait on each other.
Run: `PYTHONPATH=. python bench/fit_threads.py` (prints one line per run, then mean ± std).
"""

from __future__ import annotations

import os

import numpy as np

from cfdg.config import from_mapping
from cfdg.diffusion.config import DiffusionConfig
from cfdg.diffusion.variants.registry import get_variant
from cfdg.fake_data import make_transitions


def main(repeats: int = 3, steps: int = 400) -> None:
    off = make_transitions(20000, obs_dim=11, act_dim=3, seed=1)
    on = make_transitions(5000, obs_dim=11, act_dim=3, seed=2)
    res: dict[int, list[float]] = {1: [], 2: []}
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for rep in range(repeats):
        for threads in (1, 2):
            cfg = from_mapping(DiffusionConfig, {"width": 256, "depth": 3, "train_steps": steps, "threads": threads})
            _, m = get_variant(cfg.variant).fit(off, on, cfg, seed=0, progress=False)
            res[threads].append(m["steps_per_s"])
            print(f"run {rep} threads {threads}: {m['steps_per_s']:.1f} steps/s", flush=True)
    for threads, v in res.items():
        print(f"threads {threads}: {np.mean(v):.1f} ± {np.std(v):.1f} steps/s")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
