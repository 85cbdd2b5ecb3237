"""Stage `dataset`: the offline dataset as a transition store, built locally or imported.

`dataset.source: build` makes a D4RL-style dataset with gymnasium MuJoCo (cfdg.datasets);
any other value is a D4RL dataset name or HDF5 path, or a local Minari dataset id, that the
user already has (cfdg.sources).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cfdg import store
from cfdg.datasets.build import DatasetConfig, build_dataset
from cfdg.sources import import_source, source_path
from stages import layout, params
from stages.jsonfiles import write_json
from stages.metrics import write_metrics
from stages.provenance import config_dict, provenance
from stages.runner import progress_enabled, run_main


def make_dataset(source: str, cfg: Any, out_store: Path, out_card: Path, progress: bool = True) -> dict[str, Any]:
    """Write the offline store and its card; returns the dataset metrics."""
    if source == "build":
        card = dict(build_dataset(cfg, out_store, out_card, progress=progress))
        inputs: dict[str, Path] = {}
    else:
        import_source(source, out_store, seed=int(getattr(cfg, "seed", 0)))
        attrs = store.read_attrs(out_store)
        card = {"source": source, "env_id": attrs["env_id"], "rows": attrs["counts"]["rows"], "imported": True}
        write_json(out_card, card)
        found = source_path(source)
        inputs = {"source": found} if found is not None else {}
    rows = int(store.read_attrs(out_store)["counts"]["rows"])
    metrics = {
        "rows": rows,
        **{k: v for k, v in card.items() if isinstance(v, int | float) and not isinstance(v, bool)},
    }
    recorded = {"source": source, **config_dict(cfg)}
    write_json(out_store.parent / "dataset.provenance.json", provenance("dataset", inputs, recorded))
    return metrics


def main(argv: list[str] | None = None) -> int:
    def body(args: argparse.Namespace) -> None:
        raw = params.read_params(args.params)
        source = params.dataset_source(raw, args.params)
        cfg = params.section(raw, "dataset", DatasetConfig, args.params)
        metrics = make_dataset(source, cfg, layout.OFFLINE, layout.CARD, progress_enabled())
        write_metrics(layout.DATASET_DIR, metrics, "dataset-metrics")

    return run_main("dataset", body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
