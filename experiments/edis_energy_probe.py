"""Do EDIS's energy functions learn past chance on a real round's data, and after how many updates?

Loads round k's fitted diffusion model and online store from a finished run (a study cell's
workspace or a `cfdg run` project), trains EDIS's energies (cfdg.diffusion.edis.fit_energies) with
each number of updates given, and prints the last batch's loss and top-1 accuracy per energy.
Chance: accuracy 1/(K+1) and loss ln(K+1) for K negatives (EDIS's 10: 0.091, 2.398). The accuracy is
on the training pool (cycled when `--pool` < updates × batch), not on held-out rows.

    python experiments/edis_energy_probe.py RUN_DIR --round 2 --steps 20 200 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="a finished run's directory (holds artifacts/rounds/k/)")
    ap.add_argument("--round", type=int, default=2)
    ap.add_argument("--steps", type=int, nargs="+", default=[20, 200, 1000])
    ap.add_argument("--pool", type=int, default=2048, help="positives per energy (diffusion.edis.pool)")
    ap.add_argument("--negative-steps", type=int, default=32, help="sampler steps of the negatives")
    ap.add_argument("--energies", nargs="+", default=["state", "transition"], help="'policy' needs the agent")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from cfdg.diffusion.config import EdisConfig
    from cfdg.diffusion.edis import fit_energies
    from cfdg.diffusion.variants.registry import fitted_variant
    from cfdg.store import read_store

    rd = args.run / "artifacts" / "rounds" / str(args.round)
    model = fitted_variant(rd / "diffusion.pt").load(rd / "diffusion.pt")
    online, _ = read_store(rd / "online.zarr")
    print("| Updates | " + " | ".join(f"{e} loss | {e} accuracy" for e in args.energies) + " | Wall s |")
    print("|---:|" + "---:|---:|" * len(args.energies) + "---:|")
    for steps in args.steps:
        cfg = EdisConfig(energies=tuple(args.energies), steps=steps, pool=args.pool, negative_steps=args.negative_steps)
        t = time.perf_counter()
        _, m = fit_energies(model, online, cfg, seed=0)
        cells = [f"{m[f'energy_{e}_loss']:.3f} | {m[f'energy_{e}_accuracy']:.3f}" for e in args.energies]
        print(f"| {steps} | " + " | ".join(cells) + f" | {time.perf_counter() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()
