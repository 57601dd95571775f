"""Keeping the exposure: a restored image may not be brighter, locally, than its input.

With ``scaling="percentile"`` (*keep exposure*, what ``"auto"`` uses) the promise is that an image
is restored, never brightened. Removing noise, blur, rain or background haze keeps or lowers the
local mean brightness; only correcting low light raises it. So wherever the restored tile's local
mean (a Gaussian of `SIGMA` pixels) exceeds the input's, the smooth excess is taken off: detail
restored by the network stays, a lifted background does not (the network alone lifted the dark
background of confocal fields from 4 to 14-20 grey levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIGMA = 4.0
"""Width in pixels of the local mean; its reach (3 sigma) stays inside a tile's context margin."""


def gaussian_blur(x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), the border pixels repeated outwards."""
    radius = int(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, rows, groups=channels)
    return F.conv2d(blurred, rows.transpose(2, 3), groups=channels)


def never_brighter(restored: torch.Tensor, degraded: torch.Tensor) -> torch.Tensor:
    """`restored` less the smooth excess of its local mean over `degraded`'s."""
    restored, degraded = restored.float(), degraded.float()
    excess = torch.relu(gaussian_blur(restored) - gaussian_blur(degraded))
    return restored - excess
