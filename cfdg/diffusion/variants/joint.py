"""`joint`: one unconditional model of offline ∪ online, the paper's Table 3 "CFDG w/o guidance"."""

from __future__ import annotations

from typing import ClassVar

from cfdg.diffusion.variants.base import GeneratorVariant


class Joint(GeneratorVariant):
    """Standard diffusion on both buffers with the null class for every row; samples labelled online."""

    name: ClassVar[str] = "joint"
    display_name: ClassVar[str] = "CFDG w/o guidance"
    trains_on = ("offline", "online")
