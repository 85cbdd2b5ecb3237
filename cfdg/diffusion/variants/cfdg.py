"""`cfdg` (the paper, 3.2): one network is the class-conditional and the unconditional model.

Rows keep their buffer's class (offline 0 / online 1); label dropout (`p_uncond`) trains the null
class too, and the sampler mixes the two with classifier-free guidance (Eq. 7, `guidance_w`).
"""

from __future__ import annotations

from typing import ClassVar

from cfdg.diffusion.variants.base import GeneratorVariant


class CFDG(GeneratorVariant):
    name: ClassVar[str] = "cfdg"
    display_name: ClassVar[str] = "CFDG"
    trains_on = ("offline", "online")
    keeps_labels: ClassVar[bool] = True
    drops_labels: ClassVar[bool] = True
    guided: ClassVar[bool] = True
