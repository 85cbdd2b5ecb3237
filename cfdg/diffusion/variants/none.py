"""`none`: no augmentation, the base algorithm. Fits no model; its synthetic stores have zero rows."""

from __future__ import annotations

from typing import ClassVar

from cfdg.diffusion.variants.base import GeneratorVariant


class NoAugmentation(GeneratorVariant):
    """The stages write a placeholder checkpoint and an empty store, so the DAG keeps its shape."""

    name: ClassVar[str] = "none"
    display_name: ClassVar[str] = "Base"
    fits_model: ClassVar[bool] = False
    trains_on = ()
