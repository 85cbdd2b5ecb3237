"""Stage `materialise@k`: sample the synthetic store of round k and measure its quality.

Quality (paper 3.1, Table 2): Jensen-Shannon divergence between the real online data and
(a) the offline data, (b) the generated data, for states, actions and transitions.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfdg import store
from cfdg.store import StoreMeta
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import write_metrics
from stages.provenance import config_dict, derive_seed, input_digests, provenance
from stages.runner import progress_enabled, run_main
from stages.stores import empty_transitions, store_dims


def materialise_stage(
    model: Path,
    offline: Path,
    online: Path,
    cfg: Any,
    quality_cfg: params.QualityParams,
    seed: int,
    k: int,
    out_store: Path,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `out_store`; returns the quality metrics of round k."""
    inputs = {"diffusion": model, "offline": offline, "online": online}
    attrs = store.read_attrs(online)
    meta = StoreMeta(
        kind="synthetic",
        env_id=attrs["env_id"],
        source=attrs["source"],
        round=k,
        seed=seed,
        params={"diffusion": config_dict(cfg)},
        inputs=input_digests(inputs),
    )
    if cfg.variant == "none":
        store.write_store(out_store, empty_transitions(*store_dims(online), labels=True), meta)
    else:
        from cfdg.diffusion import load_diffusion, sample_to_store

        sample_to_store(
            load_diffusion(model),
            cfg.n_synthetic,
            out_store,
            meta,
            seed=derive_seed(seed, k, "materialise"),
            progress=progress,
        )
    recorded = {"seed": seed, "diffusion": config_dict(cfg), "quality": config_dict(quality_cfg)}
    write_json(out_store.parent / "materialise.provenance.json", provenance(f"materialise@{k}", inputs, recorded))
    return measure_quality(offline, online, out_store, quality_cfg, k)


def measure_quality(offline: Path, online: Path, synthetic: Path, cfg: params.QualityParams, k: int) -> dict[str, Any]:
    from cfdg.quality import js_divergences

    real_online, _ = store.read_store(online)
    real_offline, _ = store.read_store(offline)
    generated, _ = store.read_store(synthetic)
    quality: dict[str, Any] = {
        "round": k,
        "rows": {"offline": len(real_offline), "online": len(real_online), "generated": len(generated)},
        "offline_vs_online": js_divergences(real_online, real_offline, seed=cfg.seed, max_rows=cfg.max_rows),
    }
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
            params.section(raw, "diffusion", args.params),
            params.section(raw, "quality", args.params),
            params.seed(raw, args.params),
            k,
            out_dir / layout.SYNTHETIC,
            progress_enabled(),
        )
        write_metrics(out_dir / "quality.json", quality)

    return run_main("materialise", body, argv, rounds=True)


if __name__ == "__main__":
    raise SystemExit(main())
