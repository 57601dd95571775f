"""Degradation synthesis: seeded, batched torch operators on (B, C, H, W) images in [0, 1].

Every operator takes its randomness from a ``torch.Generator`` and accepts per-sample parameters
as (B,) tensors or Python numbers. ``synthesize`` draws random single or mixed degradations with
multi-label targets for training; ``apply`` applies one named degradation at given severities.
"""

from __future__ import annotations

from allinone.degradations._common import to_8_bits
from allinone.degradations.blur import (
    apply_kernel,
    defocus_kernel,
    gaussian_kernel,
    motion_kernel,
)
from allinone.degradations.downsample import low_resolution
from allinone.degradations.haze import add_background_haze, add_haze, depth_map
from allinone.degradations.lowlight import low_light
from allinone.degradations.mix import (
    ORDER,
    DegradedBatch,
    apply,
    check_type_weights,
    synthesize,
)
from allinone.degradations.noise import gaussian_noise, poisson_gaussian_noise
from allinone.degradations.rain import add_rain, line_kernel

__all__ = [
    "ORDER",
    "DegradedBatch",
    "add_background_haze",
    "add_haze",
    "add_rain",
    "apply",
    "apply_kernel",
    "check_type_weights",
    "defocus_kernel",
    "depth_map",
    "gaussian_kernel",
    "gaussian_noise",
    "line_kernel",
    "low_light",
    "low_resolution",
    "motion_kernel",
    "poisson_gaussian_noise",
    "synthesize",
    "to_8_bits",
]
