"""The CFDG generative model: EDM diffusion over transitions, conditioned on offline/online class."""

from cfdg.diffusion.checkpoint import check_dims, checkpoint_variant, load_diffusion, save_diffusion, save_no_model
from cfdg.diffusion.config import VARIANTS, DiffusionConfig, SamplingConfig
from cfdg.diffusion.denoiser import LABEL_NULL, Denoiser
from cfdg.diffusion.model import DiffusionModel
from cfdg.diffusion.normaliser import Normaliser, from_vectors, to_vectors
from cfdg.diffusion.sample import UNCONDITIONAL, label_pattern, sample, sample_to_store, write_empty_synthetic
from cfdg.diffusion.train import fit_diffusion

__all__ = [
    "LABEL_NULL",
    "UNCONDITIONAL",
    "VARIANTS",
    "Denoiser",
    "DiffusionConfig",
    "DiffusionModel",
    "Normaliser",
    "SamplingConfig",
    "check_dims",
    "checkpoint_variant",
    "fit_diffusion",
    "from_vectors",
    "label_pattern",
    "load_diffusion",
    "sample",
    "sample_to_store",
    "save_diffusion",
    "save_no_model",
    "to_vectors",
    "write_empty_synthetic",
]
