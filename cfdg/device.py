"""Device and precision selection: CUDA when present, CPU otherwise, never assumed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def select_device(preference: str = "auto") -> torch.device:
    """`auto` picks CUDA when available; `cpu` / `cuda` / `cuda:N` are taken as given."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        from cfdg.errors import ConfigError

        raise ConfigError(f"device={preference!r} requested but CUDA is not available")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for; a no-op context for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    from cfdg.errors import ConfigError

    raise ConfigError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Intra-op threads set to `n` for the block (0 keeps the current setting), restored after.

    Small MLPs are op-overhead bound: on a shared 2-core CPU one thread is both faster and
    immune to oversubscription, which otherwise slows tiny GEMMs by orders of magnitude.
    """
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
