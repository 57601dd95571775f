"""Rain streaks: sparse random drops smeared along a line and screen-blended onto the image."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from allinone.degradations._common import Param, as_batch, kernel_grid, per_sample, rand, view4


def line_kernel(length: Param, angle: Param, width: Param = 1.0, size: int | None = None) -> Tensor:
    """Antialiased line masks (B, k, k) with values in [0, 1] (peak 1, not normalised).

        ``angle`` is in degrees from vertical; positive angles tilt the bottom of the line to the
        right. ``length`` and ``width`` are in pixels (a vertical line of length L covers L pixels
    of a column); ``size`` defaults to the odd size holding the
        longest line.
    """
    lengths, angles, widths = torch.broadcast_tensors(
        as_batch(length), as_batch(angle), as_batch(width)
    )
    size = size or 2 * math.ceil((lengths.max().item() + widths.max().item()) / 2 + 1) + 1
    theta = torch.deg2rad(angles).view(-1, 1, 1)
    ux, uy = theta.sin(), theta.cos()
    gx, gy = kernel_grid(size, theta.device)
    half = ((lengths.view(-1, 1, 1) - 1) / 2).clamp_min(0)
    along = torch.clamp(gx * ux + gy * uy, -half, half)
    distance = torch.hypot(gx - along * ux, gy - along * uy)
    return (widths.view(-1, 1, 1) / 2 + 0.5 - distance).clamp(0, 1)


def add_rain(
    x: Tensor,
    density: Param,
    length: Param,
    angle: Param,
    brightness: Param,
    generator: torch.Generator,
    width: Param = 1.0,
) -> Tensor:
    """Add rain streaks to ``x`` (B, C, H, W).

    Drops are seeded with probability ``density`` per pixel (intensity uniform in [0.4, 1]) on a
    canvas larger than the image, so streaks also enter from the borders; each drop is drawn as
    a line of ``length`` and ``width`` pixels at ``angle`` degrees from vertical. The streak layer,
    scaled by ``brightness``, is screen-blended: y = x + brightness * streaks * (1 - x).
    """
    b, _, h, w = x.shape
    kernels = line_kernel(per_sample(length, x), per_sample(angle, x), per_sample(width, x))
    kernels = kernels.to(x.device, x.dtype)
    canvas = (b, 1, h + kernels.shape[-1] - 1, w + kernels.shape[-1] - 1)
    drops = rand(canvas, generator, x) < view4(per_sample(density, x))
    seeds = drops * (0.4 + 0.6 * rand(canvas, generator, x))
    streaks = F.conv2d(seeds.view(1, b, *canvas[2:]), kernels.unsqueeze(1), groups=b)
    layer = view4(per_sample(brightness, x)) * streaks.view(b, 1, h, w).clamp(0, 1)
    return (x + layer * (1 - x)).clamp(0, 1)
