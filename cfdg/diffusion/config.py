"""Parameters of fitting the diffusion model (`diffusion:`) and of sampling from it (`sampling:`).

They are apart because a fitted model serves many samplers: changing a sampling knob (guidance
weight, steps, rows) must never refit a model (README "Fitting and sampling are separate"). The fit
checkpoint stores a DiffusionConfig only; materialise reads a SamplingConfig.

Dataclass defaults are the paper's GPU settings (A.2: width 1024, depth 6, 100K training steps,
128 stochastic Heun steps, 1M synthetic rows); params.yaml chooses smaller sizes for CPU runs.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from cfdg.config import check, to_dict
from cfdg.device import PRECISIONS

# The names of cfdg.diffusion.edm.SOLVERS, the solver table (tests/test_solvers.py holds them equal):
# here as plain names so that validating params loads no torch code.
SOLVERS = ("heun", "dpmpp2m")
# The keys that fix the network's shape: a warm start needs them equal to the previous round's.
ARCHITECTURE_KEYS = ("width", "depth", "activation", "layer_norm", "fourier_features", "emb_dim", "conditioning")
BUFFERS = ("replace", "fifo")
ENERGIES = ("state", "policy", "transition")
# Settings sections that one variant reads: a checkpoint of any other variant leaves them out
# (`fit_record`), so adding a variant's settings never changes the other variants' checkpoints.
VARIANT_SECTIONS = {"edis": "edis"}


@dataclasses.dataclass(frozen=True)
class EdisConfig:
    """EDIS's energy functions (Liu et al. 2024), fitted after the diffusion model (variant `edis`).

    Defaults are EDIS's code (liuxhym/EDIS; README "EDIS" lists each with its file).
    """

    energies: tuple[str, ...] = ENERGIES  # README: --state_guide --policy_guide --transition_guide
    hidden: int = 256  # common/network.py MLP: 256 units per hidden layer
    layers: int = 3  # iql_edis.py energy_hidden_layers
    lr: float = 1e-3  # iql_edis.py ebm_lr (Adam)
    steps: int = 20  # iql_edis.py energy_train_epoch: updates per diffusion refit
    batch: int = 256  # trainer.py ebm_batch_size: online rows (positives) per update
    negatives: int = 10  # iql_edis.py num_negative_sample: model samples per positive
    # Positives (each with its negatives) drawn per energy; 0 = steps · batch, fresh rows for every
    # update as EDIS. Smaller: updates cycle through the pool (fresh noise and σ each time), which
    # buys more updates for the same sampling cost (the negatives are most of a fit's time on a CPU).
    pool: int = 0
    # Sampler steps of the negatives (stochastic EDM Heun); EDIS: 128 (SimpleDiffusionGenerator).
    negative_steps: int = 128
    # Energies continue from round k-1's (EDIS keeps its energy models across diffusion refits).
    warm_start: bool = True

    def __post_init__(self) -> None:
        w = "diffusion.edis"
        bad = [e for e in self.energies if e not in ENERGIES]
        check(not bad and len(self.energies) > 0, f"{w}.energies", f"must be a non-empty subset of {list(ENERGIES)}")
        for key in ("hidden", "layers", "steps", "batch", "negatives", "negative_steps"):
            check(getattr(self, key) >= 1, f"{w}.{key}", f"must be >= 1, got {getattr(self, key)}")
        check(self.lr > 0, f"{w}.lr", f"must be > 0, got {self.lr}")
        check(self.pool == 0 or self.pool >= self.batch, f"{w}.pool", f"must be 0 or >= batch, got {self.pool}")


@dataclasses.dataclass(frozen=True)
class EdisGuidance:
    """How strongly each EDIS energy steers the sampler (`sampling.edis`); iql_edis.py's defaults."""

    state: float = 2.0  # ope_clip
    policy: float = 0.1  # pe_clip
    transition: float = 0.1  # te_clip
    # elucidated_diffusion.py energy_guidance: each row's guidance norm clipped to 10·sqrt(dims).
    norm_clip: bool = True

    def __post_init__(self) -> None:
        for key in ENERGIES:
            check(getattr(self, key) >= 0, f"sampling.edis.{key}", f"must be >= 0, got {getattr(self, key)}")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """What fitting decides: the variant, the architecture, EDM's training noise, the optimiser."""

    # Old key -> its name now; the old one still reads, with one warning (cfdg.config.renamed_keys).
    RENAMED: ClassVar[dict[str, str]] = {"batch_online_share": "fit_online_fraction"}

    # A name in cfdg/diffusion/variants/registry.py, the only list of them: the fit stage and
    # `cfdg check` resolve it there; this module sits below the registry and never imports it.
    variant: str = "cfdg"

    # Denoiser: residual MLP, SynthER block x + Linear(act(LN(x))).
    width: int = 1024
    depth: int = 6
    activation: Literal["relu", "silu", "gelu"] = "relu"
    # SynthER's Python default; its gin configs, and so the paper presets, turn it off.
    layer_norm: bool = True
    fourier_features: int = 16  # random Fourier features of c_noise (SynthER: 16)
    emb_dim: int = 256  # width of the noise-level embedding MLP (SynthER: 256)
    # How class and noise level enter: `input` adds their embeddings to the projected input
    # (SynthER); `film` also modulates every block, LN(x)·(1+scale)+shift, zero-initialised.
    conditioning: Literal["input", "film"] = "input"

    # EDM (Karras et al. 2022). sigma_data 1.0 because the data is standardised (SynthER).
    # sigma_min/max/rho also shape the sampler's noise levels, but they describe the noise range
    # the model was trained for, so they stay with the model.
    sigma_data: float = 1.0
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2

    # Training. Steps = max(train_steps, ceil(steps_per_row · training rows)), capped by
    # max_train_steps when > 0: with steps_per_row > 0 the fit grows with the data.
    train_steps: int = 100_000
    steps_per_row: float = 0.0
    max_train_steps: int = 0
    batch_size: int = 256
    lr: float = 3e-4
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    ema_decay: float = 0.995
    # Chosen (the paper leaves it open): Ho & Salimans (2021) found 0.1-0.2 best (0.5 hurt), and
    # 0.2 and 0.3 measured worse than 0.1 here. lucidrains' guidance UNet drops 0.5 (an image default).
    p_uncond: float = 0.1
    # Fraction of each generator training batch drawn from the online buffer (cfdg and joint,
    # which see both buffers); None = uniform over rows. Round 1 holds ~4x more offline than online rows, so
    # uniform batches spend most steps on the offline class while `synther` spends all of them on
    # online rows. The normaliser's statistics are weighted the same way (experiments/generator_ablation.py:
    # weighting them too is worth as much as the batch share itself).
    fit_online_fraction: float | None = None
    # Start round k's fit from round k-1's weights (same steps; round 1 starts from scratch).
    warm_start: bool = False
    # Steps of a warm-started fit (round k ≥ 2 with warm_start); 0 = train_steps. A model that
    # starts from last round's weights only has to follow the data's drift, so it needs fewer.
    warm_start_steps: int = 0

    # Execution. bf16: autocast in training (fp32 master weights).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    compile: bool = False  # torch.compile the denoiser (CUDA only)
    device: str = "auto"
    threads: int = 0  # torch intra-op threads while fitting; 0 leaves torch's setting

    # Variant `edis` only: its energy functions (checkpoints of other variants leave this out).
    edis: EdisConfig = dataclasses.field(default_factory=EdisConfig)

    def __post_init__(self) -> None:
        w = "diffusion"
        check(bool(self.variant), f"{w}.variant", "must name a variant (cfdg/diffusion/variants/registry.py)")
        check(self.width >= 1, f"{w}.width", f"must be >= 1, got {self.width}")
        check(self.depth >= 1, f"{w}.depth", f"must be >= 1, got {self.depth}")
        check(self.fourier_features >= 1, f"{w}.fourier_features", "must be >= 1")
        check(self.emb_dim >= 1, f"{w}.emb_dim", "must be >= 1")
        check(self.sigma_data > 0, f"{w}.sigma_data", f"must be > 0, got {self.sigma_data}")
        check(0 < self.sigma_min < self.sigma_max, f"{w}.sigma_min", "need 0 < sigma_min < sigma_max")
        check(self.rho > 0, f"{w}.rho", "must be > 0")
        check(self.p_std > 0, f"{w}.p_std", "must be > 0")
        check(self.train_steps >= 1, f"{w}.train_steps", f"must be >= 1, got {self.train_steps}")
        check(self.warm_start_steps >= 0, f"{w}.warm_start_steps", f"must be >= 0, got {self.warm_start_steps}")
        check(self.steps_per_row >= 0, f"{w}.steps_per_row", f"must be >= 0, got {self.steps_per_row}")
        check(
            self.max_train_steps == 0 or self.max_train_steps >= self.train_steps,
            f"{w}.max_train_steps",
            f"must be 0 (no cap) or >= train_steps ({self.train_steps}), got {self.max_train_steps}",
        )
        check(self.batch_size >= 1, f"{w}.batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.lr > 0, f"{w}.lr", f"must be > 0, got {self.lr}")
        check(self.grad_clip >= 0, f"{w}.grad_clip", "must be >= 0")
        check(0 <= self.ema_decay < 1, f"{w}.ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        check(0 <= self.p_uncond < 1, f"{w}.p_uncond", f"must be in [0, 1), got {self.p_uncond}")
        check(
            self.fit_online_fraction is None or 0 < self.fit_online_fraction < 1,
            f"{w}.fit_online_fraction",
            f"must be null (uniform over rows) or in (0, 1), got {self.fit_online_fraction}",
        )
        check(self.precision in PRECISIONS, f"{w}.precision", f"must be one of {list(PRECISIONS)}")
        check(self.threads >= 0, f"{w}.threads", f"must be >= 0, got {self.threads}")


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How materialise draws the synthetic store from a fitted model; never part of the model."""

    RENAMED: ClassVar[dict[str, str]] = {"online_label_share": "generated_online_fraction"}

    # Classifier-free guidance, the paper's Eq. 7: ε = (1+w)·ε(x,c) − w·ε(x,∅).
    # w = 0 is the purely conditional model; w > 0 pushes samples away from the unconditional
    # one. Ignored for the unconditional variants (synther, joint). Chosen (the paper leaves w open;
    # 0.5-2 measured best here); lucidrains' cond_scale is w + 1 (its image default 6 = w 5).
    guidance_w: float = 1.0
    # EDM sampler (Karras et al. 2022, Algorithm 2); stochastic = churn with the EDM ImageNet
    # settings (S_churn 80, S_tmin 0.05, S_tmax 50, S_noise 1.003), else deterministic Heun.
    # dpmpp2m: DPM-Solver++(2M), deterministic, one network call per step (stochastic and
    # s_* are ignored); it reaches the probability-flow ODE's answer in ~16-32 calls.
    solver: str = "heun"
    steps: int = 128
    stochastic: bool = True
    s_churn: float = 80.0
    s_tmin: float = 0.05
    s_tmax: float = 50.0
    s_noise: float = 1.003
    # cfdg: fraction of the generated rows labelled online (paper 8:2 -> 0.8). The
    # unconditional variants label every row online (the agent uses them as the synthetic share).
    generated_online_fraction: float = 0.8
    n_rows: int = 1_000_000  # rows generated per round
    batch: int = 4096  # rows per sampler call (x2 with guidance): big GEMMs
    # bf16: a bf16 copy of the EMA network (the sampler state and EDM arithmetic stay fp32).
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    threads: int = 0  # torch intra-op threads while sampling; 0 leaves torch's setting
    # The synthetic buffer across rounds: `replace` = round k's store is round k's samples;
    # `fifo` = the newest `capacity` rows of (round k-1's store ∪ round k's samples).
    buffer: Literal["replace", "fifo"] = "replace"
    capacity: int = 1_000_000  # fifo only: most rows the synthetic store keeps
    # Variant `edis` only: the energy guidance's scales (ignored by the other variants).
    edis: EdisGuidance = dataclasses.field(default_factory=EdisGuidance)

    def __post_init__(self) -> None:
        w = "sampling"
        check(self.guidance_w >= 0, f"{w}.guidance_w", f"must be >= 0, got {self.guidance_w}")
        check(self.solver in SOLVERS, f"{w}.solver", f"must be one of {list(SOLVERS)}, got {self.solver!r}")
        check(self.steps >= 1, f"{w}.steps", f"must be >= 1, got {self.steps}")
        check(self.s_churn >= 0, f"{w}.s_churn", f"must be >= 0, got {self.s_churn}")
        check(0 <= self.s_tmin <= self.s_tmax, f"{w}.s_tmin", "need 0 <= s_tmin <= s_tmax")
        check(self.s_noise > 0, f"{w}.s_noise", f"must be > 0, got {self.s_noise}")
        check(0 <= self.generated_online_fraction <= 1, f"{w}.generated_online_fraction", "must be in [0, 1]")
        check(self.n_rows >= 0, f"{w}.n_rows", f"must be >= 0, got {self.n_rows}")
        check(self.batch >= 1, f"{w}.batch", f"must be >= 1, got {self.batch}")
        check(self.precision in PRECISIONS, f"{w}.precision", f"must be one of {list(PRECISIONS)}")
        check(self.threads >= 0, f"{w}.threads", f"must be >= 0, got {self.threads}")
        check(self.buffer in BUFFERS, f"{w}.buffer", f"must be one of {list(BUFFERS)}, got {self.buffer!r}")
        if self.buffer == "fifo":
            check(
                self.capacity >= self.n_rows,
                f"{w}.capacity",
                f"must be >= sampling.n_rows ({self.n_rows}) with buffer 'fifo', got {self.capacity}",
            )


def fit_record(cfg: DiffusionConfig) -> dict:
    """The config as a checkpoint stores it: a variant's own section only in that variant's checkpoint."""
    return {k: v for k, v in to_dict(cfg).items() if VARIANT_SECTIONS.get(k, cfg.variant) == cfg.variant}
