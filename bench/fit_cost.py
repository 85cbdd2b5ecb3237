"""What a fit costs: steps/s and the projected fit time of the default run's denoiser, the one before
issue 8's ablation, and the `quality` preset's, measured interleaved in one run on this machine.

    PYTHONPATH=. python bench/fit_cost.py [--steps 300] [--repeats 2] [--threads 1]

The projected time of a fit is its train_steps over the measured steps/s (hopper-sized rows:
20K offline + 5K online, round 1 of the default run). Ratios are against the pre-ablation default
(256x3, input conditioning, uniform batches) measured in the same run.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import yaml

from cfdg.config import from_mapping
from cfdg.diffusion.config import DiffusionConfig
from cfdg.diffusion.variants.registry import get_variant
from cfdg.fake_data import make_transitions

PREVIOUS = {"width": 256, "depth": 3, "train_steps": 5000}


def settings() -> dict[str, dict]:
    """name -> diffusion overrides: the pre-ablation default, params.yaml's, configs/quality.yaml's."""
    with open("params.yaml") as f:
        default = yaml.safe_load(f)["diffusion"]
    with open("configs/quality.yaml") as f:
        quality = default | yaml.safe_load(f)["diffusion"]
    return {"previous default (256x3 input)": PREVIOUS, "default (params.yaml)": default, "quality preset": quality}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="measured steps per fit")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    off = make_transitions(20000, obs_dim=11, act_dim=3, seed=1)
    on = make_transitions(5000, obs_dim=11, act_dim=3, seed=2)
    cases = settings()
    speed: dict[str, list[float]] = {name: [] for name in cases}
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for _ in range(a.repeats):
        for name, over in cases.items():
            cfg = from_mapping(DiffusionConfig, over | {"train_steps": a.steps, "threads": a.threads}, name)
            _, m = get_variant(cfg.variant).fit(off, on, cfg, seed=0, progress=False)
            speed[name].append(m["steps_per_s"])
    base = float(np.mean(speed["previous default (256x3 input)"]))
    print(f"load average at end: {os.getloadavg()[0]:.1f}; {a.threads} thread(s), {a.repeats} interleaved repeats")
    print("| setting | width x depth | conditioning | train steps | steps/s | projected fit (min) | cost vs previous |")
    print("|---|---|---|---:|---:|---:|---:|")
    for name, over in cases.items():
        cfg = from_mapping(DiffusionConfig, over, name)
        s = float(np.mean(speed[name]))
        print(
            f"| {name} | {cfg.width}x{cfg.depth} | {cfg.conditioning} | {cfg.train_steps} | {s:.1f} ± "
            f"{np.std(speed[name]):.1f} | {cfg.train_steps / s / 60:.1f} | "
            f"{(cfg.train_steps / s) / (PREVIOUS['train_steps'] / base):.1f}× |"
        )


if __name__ == "__main__":
    main()
