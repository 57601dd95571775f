"""Haze: the atmospheric scattering model on a synthetic depth map, and a smooth additive
background (the microscopy analogue: out-of-focus light)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from allinone.degradations._common import Param, per_sample, rand, randn, view4

NEAR, FAR = 0.3, 1.0
"""Range of the synthetic depth maps (arbitrary units: transmission is exp(-beta * depth))."""


def _minmax(field: Tensor) -> Tensor:
    lo = field.amin(dim=(-2, -1), keepdim=True)
    hi = field.amax(dim=(-2, -1), keepdim=True)
    return (field - lo) / (hi - lo).clamp_min(1e-6)


def smooth_field(x: Tensor, generator: torch.Generator, cells: int = 4) -> Tensor:
    """A random smooth field (B, 1, H, W) in [0, 1] per sample: bicubic upsampling of
    cells x cells Gaussian noise, rescaled to span [0, 1]."""
    b, _, h, w = x.shape
    coarse = randn((b, 1, cells, cells), generator, x).float()
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return _minmax(field).to(x.dtype)


def depth_map(x: Tensor, generator: torch.Generator) -> Tensor:
    """A synthetic scene depth (B, 1, H, W) in [NEAR, FAR]: a per-sample random blend of a smooth
    random field and a vertical gradient (far at the top, near at the bottom)."""
    h = x.shape[-2]
    weight = view4(rand((x.shape[0],), generator, x))
    vertical = torch.linspace(1, 0, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1)
    blend = weight * smooth_field(x, generator) + (1 - weight) * vertical
    return NEAR + (FAR - NEAR) * _minmax(blend)


def add_haze(x: Tensor, beta: Param, generator: torch.Generator) -> Tensor:
    """Atmospheric scattering I = J t + A (1 - t) with t = exp(-beta * depth).

    ``beta`` is the per-sample scattering coefficient; the depth map (see ``depth_map``) and the
    airlight A (grey level in [0.7, 1], tinted by up to +-0.05 per channel) are drawn per sample.
    """
    b, c = x.shape[:2]
    t = torch.exp(-view4(per_sample(beta, x)) * depth_map(x, generator))
    grey = 0.7 + 0.3 * rand((b, 1), generator, x)
    tint = 0.1 * (rand((b, c), generator, x) - 0.5)
    airlight = (grey + tint).clamp(0, 1).view(b, c, 1, 1)
    return (x * t + airlight * (1 - t)).clamp(0, 1)


def add_background_haze(x: Tensor, strength: Param, generator: torch.Generator) -> Tensor:
    """Smooth additive background (microscopy haze): screen-blend a random smooth field with
    values in [0.5, 1], scaled by ``strength`` in [0, 1], which lifts and flattens the image."""
    background = view4(per_sample(strength, x)) * (0.5 + 0.5 * smooth_field(x, generator))
    return (x + background * (1 - x)).clamp(0, 1)
