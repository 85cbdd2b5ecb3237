"""`VARIANTS`: the generator variant name → class table. Importing it loads every variant class.

Adding a variant = one class module next to this one + one line here; the config's check, the
stages, the reports (display names, column order = this table's order) and the studies read it.
"""

from __future__ import annotations

from cfdg.diffusion.variants.base import GeneratorVariant
from cfdg.diffusion.variants.cfdg import CFDG
from cfdg.diffusion.variants.edis import EDIS
from cfdg.diffusion.variants.joint import Joint
from cfdg.diffusion.variants.none import NoAugmentation
from cfdg.diffusion.variants.synther import SynthER
from cfdg.errors import ConfigError

VARIANTS: dict[str, type[GeneratorVariant]] = {
    "none": NoAugmentation,
    "synther": SynthER,
    "joint": Joint,
    "edis": EDIS,
    "cfdg": CFDG,
}


def get_variant(name: str) -> GeneratorVariant:
    """The variant called `name`; ConfigError names the known ones."""
    if name not in VARIANTS:
        raise ConfigError(f"diffusion.variant: must be one of {list(VARIANTS)}, got {name!r}")
    return VARIANTS[name]()


def display_name(name: str) -> str:
    """What reports call the variant; an unknown name (an older run's) is shown as it is."""
    return VARIANTS[name].display_name if name in VARIANTS else name


def order(name: str) -> tuple[int, str]:
    """Sort key: this table's order, unknown names after, alphabetically."""
    names = list(VARIANTS)
    return (names.index(name) if name in names else len(names), name)
