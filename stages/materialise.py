"""Stage `materialise@k`: sample the synthetic store of round k and measure its quality.

Reads params `sampling` (+ seed) and `quality`, never `diffusion`: the variant comes from the
fitted checkpoint, so a sampling change reruns this stage and what follows, and no fit.
With `sampling.buffer: fifo` the store also keeps the newest rows of round k-1's store.

Quality (paper 3.1, Table 2; cfdg.quality.measure_quality): Jensen-Shannon divergence between the
real online data and (a) the offline data, (b) the generated data, simulator fidelity and the
memorisation ratio. It is measured on the complete temporary store before the rename and recorded
in the store's dataset card (cfdg.card), so the store carries its own quality figures wherever it is
shared; quality.json beside it holds the same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfdg import store
from cfdg.device import resolve_precision, select_device
from cfdg.diffusion.checkpoint import checkpoint_summary
from cfdg.diffusion.config import SamplingConfig
from cfdg.diffusion.sample import sample_to_store
from cfdg.diffusion.variants.registry import fitted_variant
from cfdg.quality import QualityConfig, measure_quality
from cfdg.store import StoreMeta
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import quality_headline, write_metrics
from stages.provenance import config_dict, derive_seed, input_digests, provenance
from stages.runner import progress_enabled, run_main
from stages.stores import empty_transitions, store_dims


def materialise_stage(
    model: Path,
    offline: Path,
    online: Path,
    cfg: Any,
    quality_cfg: QualityConfig,
    seed: int,
    k: int,
    out_store: Path,
    progress: bool = True,
    prev_synthetic: Path | None = None,
) -> dict[str, Any]:
    """Write `out_store` from the model and `cfg` (a SamplingConfig); returns round k's quality metrics.

    `prev_synthetic` (round k-1's store) is read only with `cfg.buffer == "fifo"`.
    """
    spec = fitted_variant(model)  # resolved once, then passed down
    generator = checkpoint_summary(model)
    variant = spec.name
    for real in (offline, online):  # a damaged input fails here, before any output is written
        store.read_store(real)
    inputs = {"diffusion": model, "offline": offline, "online": online}
    carried = spec.fits_model and cfg.buffer == "fifo" and prev_synthetic is not None
    if carried:
        inputs["previous_synthetic"] = prev_synthetic
    attrs = store.read_attrs(online)
    meta = StoreMeta(
        kind="synthetic",
        env_id=attrs["env_id"],
        source=attrs["source"],
        round=k,
        seed=seed,
        params={"variant": variant, "sampling": config_dict(cfg)},
        inputs=input_digests(inputs),
        card={"generator": generator},
    )
    quality: dict[str, Any] = {}

    def measure(tmp_store: Path) -> dict[str, Any]:
        """Quality of the complete temporary store: the card carries it, inside the store's digest."""
        quality.update(measure_quality(offline, online, tmp_store, quality_cfg, k))
        return {"quality": quality}

    if not spec.fits_model:
        empty = empty_transitions(*store_dims(online), labels=True)
        store.write_store(out_store, empty, meta, annotate=measure)
    else:
        sample_to_store(
            spec.load(model),
            spec,
            out_store,
            meta,
            seed=derive_seed(seed, k, "materialise"),
            sampling=cfg,
            prev=prev_synthetic if carried else None,
            progress=progress,
            annotate=measure,
        )
    recorded = {"seed": seed, "variant": variant, "sampling": config_dict(cfg), "quality": config_dict(quality_cfg)}
    if spec.fits_model:  # `auto` precision depends on the machine: say what it was here
        recorded["precision"] = resolve_precision(cfg.precision, select_device("auto"))
    write_json(out_store.parent / "materialise.provenance.json", provenance(f"materialise@{k}", inputs, recorded))
    return quality


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> None:
        raw = params.read_params(args.params)
        k = args.round
        out_dir = layout.round_dir(k)
        quality = materialise_stage(
            out_dir / layout.DIFFUSION,
            layout.OFFLINE,
            out_dir / layout.ONLINE,
            params.section(raw, "sampling", SamplingConfig, args.params),
            params.section(raw, "quality", QualityConfig, args.params),
            params.seed(raw, args.params),
            k,
            out_dir / layout.SYNTHETIC,
            progress_enabled(),
            prev_synthetic=layout.round_dir(k - 1) / layout.SYNTHETIC,
        )
        # quality.json keeps every measurement (the report reads it); the metrics file the headline.
        write_json(out_dir / layout.QUALITY, quality)
        headline = {"round": k, **quality_headline(quality)}
        write_metrics(layout.stage_metrics_dir(k, "materialise"), headline, f"{k}-quality", raw=quality)

    return run_main("materialise", body, argv, rounds=True)


if __name__ == "__main__":
    raise SystemExit(main())
