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


def round_dir(k: int, root: Path = Path(".")) -> Path:
    return root / ROUNDS_DIR / str(k)
