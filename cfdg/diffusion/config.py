"""Parameters of the diffusion model, its training and its sampler (paper A.2; EDM; SynthER).

Dataclass defaults are the paper's GPU settings (width 1024, depth 6, 128 Heun steps, 100K
training steps); the pipeline's params.yaml chooses smaller sizes for CPU runs.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from cfdg.config import check

Variant = Literal["none", "synther", "cfdg"]
VARIANTS = ("none", "synther", "cfdg")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    # Which augmentation: none (no model), synther (unconditional, online data), cfdg (conditional).
    variant: Variant = "cfdg"

    # Denoiser: residual MLP, SynthER block x + Linear(act(LN(x))).
    width: int = 1024
    depth: int = 6
    activation: Literal["relu", "silu", "gelu"] = "relu"
    layer_norm: bool = True
    fourier_features: int = 16  # random Fourier features of c_noise (SynthER: 16)
    emb_dim: int = 256  # width of the noise-level embedding MLP (SynthER: 256)

    # EDM (Karras et al. 2022). sigma_data 1.0 because the data is standardised (SynthER).
    sigma_data: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2

    # Training.
    train_steps: int = 100_000
    batch_size: int = 256
    lr: float = 3e-4
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.995
    # Ho & Salimans (2021) found p_uncond 0.1-0.2 best (0.5 hurt); with only two classes a
    # small drop rate keeps most of the signal for the conditional model.
    p_uncond: float = 0.1

    # Sampling: stochastic Heun sampler with the EDM ImageNet settings, or deterministic Heun.
    guidance_w: float = 1.0  # D = (1+w) D(x,c) - w D(x,null); 0 = purely conditional
    sample_steps: int = 128
    stochastic: bool = True
    s_churn: float = 80.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    online_fraction: float = 0.8  # cfdg: share of online-labelled samples (paper 8:2)
    n_synthetic: int = 1_000_000
    sample_batch: int = 4096  # rows per sampler call (x2 with guidance): big GEMMs

    # Execution. bf16: autocast in training (fp32 master weights), a bf16 copy of the EMA
    # network for sampling (sampler state and EDM arithmetic stay fp32).
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the denoiser (CUDA only)
    device: str = "auto"

    def __post_init__(self) -> None:
        w = "diffusion"
        check(self.variant in VARIANTS, w, f"variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        check(self.width >= 1, f"{w}.width", f"must be >= 1, got {self.width}")
        check(self.depth >= 1, f"{w}.depth", f"must be >= 1, got {self.depth}")
        check(self.fourier_features >= 1, f"{w}.fourier_features", "must be >= 1")
        check(self.emb_dim >= 1, f"{w}.emb_dim", "must be >= 1")
        check(self.sigma_data > 0, f"{w}.sigma_data", f"must be > 0, got {self.sigma_data}")
        check(0 < self.sigma_min < self.sigma_max, f"{w}.sigma_min", "need 0 < sigma_min < sigma_max")
        check(self.rho > 0, f"{w}.rho", "must be > 0")
        check(self.p_std > 0, f"{w}.p_std", "must be > 0")
        check(self.train_steps >= 1, f"{w}.train_steps", f"must be >= 1, got {self.train_steps}")
        check(self.batch_size >= 1, f"{w}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"{w}.lr", f"must be > 0, got {self.lr}")
        check(self.grad_clip >= 0, f"{w}.grad_clip", "must be >= 0")
        check(0 <= self.ema_decay < 1, f"{w}.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        check(0 <= self.p_uncond < 1, f"{w}.p_uncond", f"must be in [0, 1), got {self.p_uncond}")
        check(self.guidance_w >= 0, f"{w}.guidance_w", f"must be >= 0, got {self.guidance_w}")
        check(self.sample_steps >= 1, f"{w}.sample_steps", f"must be >= 1, got {self.sample_steps}")
        check(self.s_churn >= 0 and self.s_noise > 0, f"{w}.s_churn", "need s_churn >= 0 and s_noise > 0")
        check(0 <= self.online_fraction <= 1, f"{w}.online_fraction", "must be in [0, 1]")
        check(self.n_synthetic >= 0, f"{w}.n_synthetic", "must be >= 0")
        check(self.sample_batch >= 1, f"{w}.sample_batch", "must be >= 1")
        check(self.precision in ("fp32", "bf16"), f"{w}.precision", "must be 'fp32' or 'bf16'")
