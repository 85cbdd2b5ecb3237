"""Provenance: what produced an output (inputs' sha256, parameters, code version) and its seeds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cfdg.config import to_dict
from cfdg.io import code_version, digest
from stages.jsonfiles import plain


def derive_seed(seed: int, round_index: int, salt: str) -> int:
    """A per-(round, stage) seed: distinct streams for every round and stage, same for the same inputs."""
    entropy = [seed, round_index, *salt.encode()]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def config_dict(cfg: Any) -> dict[str, Any]:
    return to_dict(cfg) if cfg is not None else {}


def provenance(
    stage: str, inputs: Mapping[str, Path], params: Mapping[str, Any], about: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What produced an output: each input's sha256, the parameters, the code version. No clock time.

    `about` holds the text facts of the run (algo, env, ...): they describe it, unlike the metrics files,
    which hold numbers only.
    """
    out = {
        "stage": stage,
        "inputs": {name: {"path": Path(p).as_posix(), "sha256": digest(p)} for name, p in sorted(inputs.items())},
        "params": plain(params),
        "code_version": code_version(),
    }
    if about:
        out["about"] = dict(sorted(about.items()))
    return out


def input_digests(inputs: Mapping[str, Path]) -> dict[str, str]:
    """name -> sha256, the form StoreMeta.inputs takes."""
    return {name: digest(p) for name, p in sorted(inputs.items())}
