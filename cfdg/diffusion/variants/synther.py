"""`synther` (Lu et al. 2023): an unconditional model of the online buffer only."""

from __future__ import annotations

from typing import ClassVar

from cfdg.diffusion.variants.base import GeneratorVariant


class SynthER(GeneratorVariant):
    """Null class on online rows; samples are labelled online (the agent's synthetic share)."""

    name: ClassVar[str] = "synther"
    display_name: ClassVar[str] = "SynthER"
    trains_on = ("online",)
