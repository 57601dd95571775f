"""Blur kernels (Gaussian, camera motion, defocus disk) and their per-sample application."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from allinone.degradations._common import Param, as_batch, kernel_grid


def _normalise(kernels: Tensor) -> Tensor:
    return kernels / kernels.sum(dim=(-2, -1), keepdim=True)


def gaussian_kernel(sigma: Param, size: int | None = None) -> Tensor:
    """Isotropic Gaussian kernels (B, k, k) summing to 1, one per ``sigma`` (pixels).

    ``size`` defaults to the odd size covering +-3 sigma of the widest kernel.
    """
    s = as_batch(sigma).clamp_min(1e-3).view(-1, 1, 1)
    size = size or 2 * math.ceil(3 * s.max().item()) + 1
    gx, gy = kernel_grid(size, s.device)
    return _normalise(torch.exp(-(gx**2 + gy**2) / (2 * s**2)))


def defocus_kernel(radius: Param, size: int | None = None) -> Tensor:
    """Out-of-focus disk kernels (B, k, k) of the given radii (pixels), with antialiased edges,
    summing to 1."""
    r = as_batch(radius).clamp_min(0).view(-1, 1, 1)
    size = size or 2 * math.ceil(r.max().item() + 0.5) + 1
    gx, gy = kernel_grid(size, r.device)
    return _normalise((r + 0.5 - torch.hypot(gx, gy)).clamp(0, 1))


def _trajectory(length: Tensor, generator: torch.Generator, points: int) -> Tensor:
    """Random camera paths (B, points, 2) of the given arc lengths, centred on their bounding box.

    Each path starts in a random direction, bends with a random constant curvature (up to
    +-1.5 rad over the whole path) and wanders by a small random walk of its heading.
    """
    b, dev = length.numel(), length.device
    u = torch.rand((b, 2), generator=generator, device=dev)
    wander = torch.randn((b, points - 1), generator=generator, device=dev)
    arc = torch.linspace(-0.5, 0.5, points - 1, device=dev) * length.view(-1, 1)
    curvature = (2 * u[:, 1:] - 1) * 1.5 / length.view(-1, 1).clamp_min(1)
    heading = (
        2 * math.pi * u[:, :1] + curvature * arc + (0.5 / math.sqrt(points)) * wander.cumsum(1)
    )
    step = (length / (points - 1)).view(-1, 1, 1)
    moves = step * torch.stack([heading.cos(), heading.sin()], dim=-1)
    path = torch.cat([torch.zeros_like(moves[:, :1]), moves.cumsum(1)], dim=1)
    centre = (path.amax(dim=1, keepdim=True) + path.amin(dim=1, keepdim=True)) / 2
    return path - centre


def _splat(path: Tensor, size: int) -> Tensor:
    """Rasterise paths (B, N, 2) onto size x size grids by bilinear splatting."""
    pos = path + (size - 1) / 2
    base = pos.floor()
    frac = pos - base
    grid = torch.zeros(path.shape[0], size * size, device=path.device)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        wx = frac[..., 0] if dx else 1 - frac[..., 0]
        wy = frac[..., 1] if dy else 1 - frac[..., 1]
        col, row = base[..., 0] + dx, base[..., 1] + dy
        inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
        index = (row.clamp(0, size - 1) * size + col.clamp(0, size - 1)).long()
        grid.scatter_add_(1, index, wx * wy * inside)
    return grid.view(-1, size, size)


def motion_kernel(length: Param, generator: torch.Generator, size: int | None = None) -> Tensor:
    """Random camera-shake kernels (B, k, k) summing to 1, one per path ``length`` (pixels).

    The path is a randomly oriented, slightly curved, jittered trajectory (see
    ``_trajectory``). Kernels are built on the generator's device. ``size`` defaults to the odd
    size that holds the longest path.
    """
    lengths = as_batch(length, generator.device).clamp_min(0)
    longest = lengths.max().item()
    size = size or 2 * math.ceil(longest / 2 + 1) + 1
    path = _trajectory(lengths, generator, points=4 * math.ceil(longest) + 2)
    return _normalise(_splat(path, size))


def apply_kernel(x: Tensor, kernels: Tensor) -> Tensor:
    """Convolve each image of ``x`` (B, C, H, W) with its kernel (B, k, k), k odd; a single
    kernel (k, k) or (1, k, k) is shared by the batch. Reflect padding keeps the size."""
    b, c, h, w = x.shape
    k = kernels.to(x.device, x.dtype).reshape(-1, *kernels.shape[-2:])
    size = k.shape[-1]
    if size % 2 == 0 or k.shape[-2] != size:
        raise ValueError(f"kernels must be square with an odd size, got {tuple(k.shape[-2:])}")
    weight = k.expand(b, -1, -1).flip(-2, -1).repeat_interleave(c, dim=0).unsqueeze(1)
    pad = size // 2
    mode = "reflect" if pad < min(h, w) else "replicate"
    padded = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode=mode)
    return F.conv2d(padded, weight, groups=b * c).view(b, c, h, w)
