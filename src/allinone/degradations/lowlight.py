"""Low light: gamma darkening, exposure scaling and the photon noise that comes with it."""

from __future__ import annotations

import torch
from torch import Tensor

from allinone.degradations._common import Param, per_sample, view4
from allinone.degradations.noise import poisson_gaussian_noise


def low_light(
    x: Tensor,
    gamma: Param,
    scale: Param,
    generator: torch.Generator,
    photons: Param | None = 300.0,
    read_sigma: Param = 0.005,
) -> Tensor:
    """Under-exposure: y = scale * x**gamma (gamma >= 1, scale < 1), then Poisson-Gaussian noise
    with ``photons`` expected counts at full scale and ``read_sigma`` read noise (none when
    ``photons`` is None)."""
    dark = view4(per_sample(scale, x)) * x.clamp(0, 1) ** view4(per_sample(gamma, x))
    if photons is None:
        return dark
    return poisson_gaussian_noise(dark, photons, read_sigma, generator)
