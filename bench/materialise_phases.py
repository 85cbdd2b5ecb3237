"""Where a finished run's materialise@k spends its time: model load, sampling, quality measurement.

Re-samples round k's store from its fitted model into a temporary store (the run is not touched)
with the run's own `sampling` and `quality` params, one torch thread, and prints each phase's wall
seconds. The stage's own wall time (DVC's stage log) minus these is process and DVC start-up.

    python bench/materialise_phases.py --project /path/to/finished/run --round 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."), help="a project whose run has finished round k")
    ap.add_argument("--round", type=int, default=2)
    args = ap.parse_args()
    os.chdir(args.project)  # the stage layout is relative to the project root
    torch.set_num_threads(1)

    from cfdg.diffusion.config import SamplingConfig
    from cfdg.diffusion.sample import sample_to_store
    from cfdg.diffusion.variants.registry import fitted_variant
    from cfdg.quality import QualityConfig, measure_quality
    from cfdg.store import StoreMeta, read_attrs
    from stages import layout, params

    raw = params.read_params(Path("params.yaml"))
    sampling = params.section(raw, "sampling", SamplingConfig, "params.yaml")
    quality = params.section(raw, "quality", QualityConfig, "params.yaml")
    rd = layout.round_dir(args.round)
    times: dict[str, float] = {}
    t = time.perf_counter()
    variant = fitted_variant(rd / layout.DIFFUSION)
    model = variant.load(rd / layout.DIFFUSION)
    times["load model"] = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "synthetic.zarr"
        meta = StoreMeta(kind="synthetic", env_id=read_attrs(rd / layout.ONLINE)["env_id"], source="bench", round=0)
        t = time.perf_counter()
        sample_to_store(model, variant, out, meta, seed=0, sampling=sampling, progress=False)
        times[f"sample and write {sampling.n_rows} rows ({sampling.steps} steps)"] = time.perf_counter() - t
        t = time.perf_counter()
        measure_quality(layout.OFFLINE, rd / layout.ONLINE, out, quality, args.round)
        times["quality (JS, fidelity, memorisation)"] = time.perf_counter() - t
    print("| Phase | Wall s |\n|---|---:|")
    for name, s in times.items():
        print(f"| {name} | {s:.1f} |")


if __name__ == "__main__":
    main()
