"""cfdg: Classifier-Free Diffusion Generation for offline-to-online reinforcement learning."""

__version__ = "0.1.0"
