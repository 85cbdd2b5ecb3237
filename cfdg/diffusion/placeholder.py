"""The diffusion checkpoint's format tag, version, and the no-model placeholder.

Apart from checkpoint.py so that writing round 0's placeholder (the pretrain stage) loads no
network code: pretraining does not depend on, and is not rerun for, changes to the model.
"""

from __future__ import annotations

import os
from pathlib import Path

from cfdg.io import atomic_torch_save

FORMAT = "cfdg-diffusion"
# 2: the config holds fitting parameters only (sampling moved to params `sampling:`).
# 3: class_balance became batch_online_share.
# 4: batch_online_share became fit_online_fraction.
VERSION = 4


def save_no_model(path: str | os.PathLike) -> Path:
    """The `none` variant's placeholder: the DAG keeps its shape, materialise knows to write no rows."""
    return atomic_torch_save(path, {"format": FORMAT, "version": VERSION, "variant": "none"})
