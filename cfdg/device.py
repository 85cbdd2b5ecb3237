"""Device and precision selection: CUDA when present, CPU otherwise, never assumed."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

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


PRECISIONS = ("fp32", "bf16", "auto")
# CPU flags of native bf16 arithmetic: AVX512-BF16 (Intel Cooper Lake+, AMD Zen 4+) and AMX (Sapphire Rapids+).
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU computes bf16 natively; without it bf16 is emulated and slower than fp32."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return bool(NATIVE_BF16_FLAGS & set(flags))


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 where the device computes it natively (a CUDA GPU with bf16, a CPU with
    AVX512-BF16 or AMX), else fp32; `fp32` and `bf16` are taken as given."""
    if precision not in PRECISIONS:
        from cfdg.errors import ConfigError

        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked for (or `auto` on a device with native bf16); a no-op context for fp32."""
    precision = resolve_precision(precision, device)
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
