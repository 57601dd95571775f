"""Helpers shared by the degradation operators: per-sample parameters and seeded draws.

Random numbers are drawn on the generator's device and then moved to the image's device, so a
CPU generator can drive a GPU batch and vice versa while staying deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Param = float | Tensor
"""A per-sample parameter: a Python number (shared by the batch) or a tensor of shape (B,)."""


def per_sample(value: Param, x: Tensor) -> Tensor:
    """Return ``value`` as a (B,) tensor on the device and dtype of ``x`` (B = ``x.shape[0]``)."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(x.shape[0])


def as_batch(value: Param, device: torch.device | str | None = None) -> Tensor:
    """Return ``value`` as a 1-D float32 tensor (a number becomes a batch of one)."""
    return torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)


def view4(v: Tensor) -> Tensor:
    """Reshape a (B,) tensor to (B, 1, 1, 1) so it broadcasts over (B, C, H, W)."""
    return v.view(-1, 1, 1, 1)


def rand(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Uniform draws in [0, 1) from ``generator``, on the device and dtype of ``like``."""
    u = torch.rand(tuple(shape), generator=generator, device=generator.device)
    return u.to(like.device, like.dtype)


def randn(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard normal draws from ``generator``, on the device and dtype of ``like``."""
    z = torch.randn(tuple(shape), generator=generator, device=generator.device)
    return z.to(like.device, like.dtype)


def poisson(rates: Tensor, generator: torch.Generator) -> Tensor:
    """Poisson draws with the given non-negative ``rates``, on the rates' device and dtype."""
    counts = torch.poisson(rates.to(generator.device, torch.float32), generator=generator)
    return counts.to(rates.device, rates.dtype)


def kernel_grid(size: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Column (x) and row (y) offsets from the centre of a size x size kernel, as (1, 1, k) and
    (1, k, 1) tensors that broadcast against a batch of kernels."""
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    return r.view(1, 1, -1), r.view(1, -1, 1)


def to_8_bits(x: Tensor) -> Tensor:
    """`x` clipped to [0, 1] and rounded to the 256 levels of an 8-bit image."""
    return torch.round(x.clamp(0, 1) * 255) / 255
