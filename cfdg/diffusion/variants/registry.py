"""`VARIANTS`: the generator variant name → class table, the only list of the names.

Importing it loads every variant class.

Adding a variant = one class module next to this one + one line here; the stages resolve a name here
once and pass the variant object down (the config, the checkpoint, the fit and the sampler never look
a name up), and the reports (display names, column order = this table's order) and the studies read it.
"""

from __future__ import annotations

import os

from cfdg.diffusion.checkpoint import checkpoint_variant
from cfdg.diffusion.variants.base import GeneratorVariant
from cfdg.diffusion.variants.cfdg import CFDG
from cfdg.diffusion.variants.edis import EDIS
from cfdg.diffusion.variants.joint import Joint
from cfdg.diffusion.variants.none import NoAugmentation
from cfdg.diffusion.variants.synther import SynthER
from cfdg.errors import CheckpointError, ConfigError

VARIANTS: dict[str, type[GeneratorVariant]] = {
    "none": NoAugmentation,
    "synther": SynthER,
    "joint": Joint,
    "edis": EDIS,
    "cfdg": CFDG,
}


def get_variant(name: str) -> GeneratorVariant:
    """The variant called `name` (params `diffusion.variant`); ConfigError names the known ones."""
    if name not in VARIANTS:
        raise ConfigError(f"diffusion.variant: must be one of {list(VARIANTS)}, got {name!r}")
    return VARIANTS[name]()


def fitted_variant(path: str | os.PathLike) -> GeneratorVariant:
    """The variant whose fit wrote the checkpoint at `path` (materialise reads no `diffusion` params).

    CheckpointError when the checkpoint names a variant this cfdg does not know.
    """
    name = checkpoint_variant(path)
    if name not in VARIANTS:
        raise CheckpointError(f"{path}: variant {name!r} is not one this cfdg knows ({list(VARIANTS)})")
    return VARIANTS[name]()


def display_name(name: str) -> str:
    """What reports call the variant; an unknown name (an older run's) is shown as it is."""
    return VARIANTS[name].display_name if name in VARIANTS else name


def order(name: str) -> tuple[int, str]:
    """Sort key: this table's order, unknown names after, alphabetically."""
    names = list(VARIANTS)
    return (names.index(name) if name in names else len(names), name)
