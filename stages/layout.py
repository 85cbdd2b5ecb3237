"""Where each artifact lives, relative to the project root (the directory holding dvc.yaml).

One place for the paths that dvc.yaml also spells out, so stages, flows and the report agree.
Round 0 is the pretrained agent with an empty online and synthetic store, which lets every
round k read `rounds/<k-1>/` the same way.
"""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path("artifacts")
DATASET_DIR = ARTIFACTS / "dataset"
OFFLINE = DATASET_DIR / "offline.zarr"
CARD = DATASET_DIR / "card.json"
ROUNDS_DIR = ARTIFACTS / "rounds"
REPORT_DIR = ARTIFACTS / "report"

AGENT = "agent.pt"
ONLINE = "online.zarr"
SYNTHETIC = "synthetic.zarr"
DIFFUSION = "diffusion.pt"
QUALITY = "quality.json"


def round_dir(k: int, root: Path = Path(".")) -> Path:
    return root / ROUNDS_DIR / str(k)


# dvclive writes a stage's numbers to `<its dir>/metrics.json` and its curves under `<its dir>/plots/`.
METRICS = "metrics.json"


def stage_subdir(k: int, stage: str) -> Path:
    """Round k's dvclive directory of `stage`, inside the round directory (round 0, pretrain, is that itself)."""
    return Path(".") if k == 0 else Path(stage)


def score_file(k: int) -> Path:
    """Inside round k's directory, the metrics file with its learning-curve point (pretrain, then rollout)."""
    return stage_subdir(k, "rollout") / METRICS


def stage_metrics_dir(k: int, stage: str, root: Path = Path(".")) -> Path:
    return round_dir(k, root) / stage_subdir(k, stage)


def score_metrics(k: int, root: Path = Path(".")) -> Path:
    return round_dir(k, root) / score_file(k)
