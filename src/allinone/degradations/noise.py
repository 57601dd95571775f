"""Sensor noise: additive Gaussian and Poisson-Gaussian (shot + read noise, as in microscopy)."""

from __future__ import annotations

import torch
from torch import Tensor

from allinone.degradations._common import Param, per_sample, poisson, randn, view4


def gaussian_noise(x: Tensor, sigma: Param, generator: torch.Generator) -> Tensor:
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` (in [0, 1] units, e.g.
    25/255) to ``x`` (B, C, H, W) and clip to [0, 1]."""
    s = view4(per_sample(sigma, x))
    return (x + s * randn(x.shape, generator, x)).clamp(0, 1)


def poisson_gaussian_noise(
    x: Tensor, photons: Param, read_sigma: Param, generator: torch.Generator
) -> Tensor:
    """Shot and read noise: y = Poisson(photons * x) / photons + N(0, read_sigma^2), clipped.

    ``photons`` is the expected photon count of a pixel of value 1, so the variance at
    intensity x is x / photons + read_sigma^2.
    """
    p = view4(per_sample(photons, x))
    shot = poisson(x.clamp(0, 1) * p, generator) / p
    r = view4(per_sample(read_sigma, x))
    return (shot + r * randn(x.shape, generator, x)).clamp(0, 1)
