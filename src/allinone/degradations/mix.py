"""Random single or mixed degradations with multi-label targets: the training-time sampler.

Severity s in [0, 1] maps to operator parameters in ranges common in the all-in-one restoration
literature (see the ``_noise`` ... ``_downsample`` functions). Mixed degradations are applied in
physical order: scene (haze, rain), optics (blur), sampling (downsample), exposure (low light),
sensor (noise).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from allinone.degradations._common import Param, per_sample, rand, to_8_bits, view4
from allinone.degradations.blur import apply_kernel, defocus_kernel, gaussian_kernel, motion_kernel
from allinone.degradations.downsample import low_resolution
from allinone.degradations.haze import FAR, NEAR, add_background_haze, add_haze
from allinone.degradations.lowlight import low_light
from allinone.degradations.noise import gaussian_noise, poisson_gaussian_noise
from allinone.degradations.rain import add_rain
from allinone.types import DEGRADATIONS

NOISELESS_LOW_LIGHT = 0.35
"""Fraction of the low-light samples left without photon noise (see `_low_light`)."""

ORDER: tuple[str, ...] = ("haze", "rain", "blur", "downsample", "low_light", "noise")
"""The order in which the degradations of one sample are applied."""


@dataclass
class DegradedBatch:
    """A synthesised batch; the columns of ``labels`` and ``severities`` follow DEGRADATIONS."""

    degraded: Tensor
    """(B, C, H, W) degraded images in [0, 1]."""
    labels: Tensor
    """(B, 6) 1.0 where a degradation was applied, else 0.0."""
    severities: Tensor
    """(B, 6) severity in [0, 1] of each applied degradation, 0.0 where none."""


def _noise(x: Tensor, s: Tensor, g: torch.Generator, microscopy: bool) -> Tensor:
    """Gaussian sigma 5/255..50/255; Poisson-Gaussian (always for microscopy, else for 30% of
    samples) with 1000..10 photons at full scale and read noise 1/255..10/255."""
    shot = poisson_gaussian_noise(x, 10 ** (3 - 2 * s), (1 + 9 * s) / 255, g)
    if microscopy:
        return shot
    use_shot = rand((x.shape[0],), g, x) < 0.3
    return torch.where(view4(use_shot), shot, gaussian_noise(x, (5 + 45 * s) / 255, g))


def _blur(x: Tensor, s: Tensor, g: torch.Generator, microscopy: bool) -> Tensor:
    """Per sample one of: Gaussian (sigma 0.8..3), defocus disk (radius 2 sigma = 1.6..6) or,
    except for microscopy, motion (path length 5..25 px; 40% of samples)."""
    sigma, length = 0.8 + 2.2 * s, 5 + 20 * s
    size = 2 * math.ceil(max(3 * sigma.max().item(), length.max().item() / 2 + 1)) + 1
    kernels = torch.stack(
        [
            gaussian_kernel(sigma, size),
            defocus_kernel(2 * sigma, size),
            motion_kernel(length, g, size).to(x.device),
        ]
    )
    u = rand((x.shape[0],), g, x)
    kind = (u >= 0.5).long() if microscopy else (u >= 0.3).long() + (u >= 0.6).long()
    return apply_kernel(x, kernels[kind, torch.arange(x.shape[0], device=x.device)])


def _haze(x: Tensor, s: Tensor, g: torch.Generator, microscopy: bool) -> Tensor:
    """Mean transmission 0.9..0.2 (beta from the mean depth); for microscopy a smooth
    background of strength 0.1..0.7."""
    if microscopy:
        return add_background_haze(x, 0.1 + 0.6 * s, g)
    transmission = 0.9 - 0.7 * s
    return add_haze(x, -torch.log(transmission) / ((NEAR + FAR) / 2), g)


def _rain(x: Tensor, s: Tensor, g: torch.Generator, microscopy: bool) -> Tensor:
    """Light to heavy (Rain100H-like) streaks: drop density 0.15..0.8%, length 8..35 px, width
    1..2.5 px, brightness 0.5..0.9, angle uniform in +-30 degrees from vertical."""
    angle = 60 * rand((x.shape[0],), g, x) - 30
    return add_rain(x, 0.0015 + 0.0065 * s, 8 + 27 * s, angle, 0.5 + 0.4 * s, g, width=1 + 1.5 * s)


def _low_light(x: Tensor, s: Tensor, g: torch.Generator, microscopy: bool) -> Tensor:
    """Scale 0.6..0.15 and gamma 1..1.5+2s (uniform per sample: 1 is a plain under-exposure of
    an sRGB photo, above 1 crushes the shadows too). `NOISELESS_LOW_LIGHT` of the samples stay
    free of noise, rounded to 8 bits (a camera that denoised its dark frame, or darkening by
    code that adds none): trained only with photon noise, the model read darkness as low light
    only when noisy (a noise-free 10 % exposure read 0.00). The rest get 2000..320 photons at
    full scale and read noise 0.5..2.5/255."""
    gamma = 1 + (0.5 + 2 * s) * rand((x.shape[0],), g, x)
    dark = low_light(x, gamma, 0.6 - 0.45 * s, g, photons=None)
    noisy = poisson_gaussian_noise(dark, 10 ** (3.3 - 0.8 * s), (0.5 + 2 * s) / 255, g)
    noiseless = rand((x.shape[0],), g, x) < NOISELESS_LOW_LIGHT
    return torch.where(view4(noiseless), to_8_bits(dark), noisy)


def _downsample(x: Tensor, s: Tensor, g: torch.Generator, microscopy: bool) -> Tensor:
    """Factor 2 for s < 1/3, 3 for s < 2/3, else 4."""
    return low_resolution(x, 2 + (3 * s).floor().clamp(max=2))


_APPLY: dict[str, Callable[[Tensor, Tensor, torch.Generator, bool], Tensor]] = {
    "noise": _noise,
    "blur": _blur,
    "haze": _haze,
    "rain": _rain,
    "low_light": _low_light,
    "downsample": _downsample,
}


def apply(
    x: Tensor, name: str, severity: Param, generator: torch.Generator, microscopy: bool = False
) -> Tensor:
    """Apply the degradation ``name`` (one of DEGRADATIONS) to ``x`` (B, C, H, W) at per-sample
    ``severity`` in [0, 1]. ``microscopy`` selects the microscopy variant where one exists
    (noise, blur, haze)."""
    if name not in _APPLY:
        raise ValueError(f"unknown degradation {name!r}; expected one of {DEGRADATIONS}")
    return _APPLY[name](x, per_sample(severity, x).clamp(0, 1), generator, microscopy)


NOT_IN_MICROSCOPY: tuple[str, ...] = ("rain", "low_light")
"""Never synthesised on microscopy: there is no rain under a microscope, and a dim fluorescence
image is the signal itself (few photons show up as Poisson noise), not an exposure to correct."""


def _allowed(types: Sequence[str] | None, microscopy: bool) -> list[str]:
    names = list(DEGRADATIONS if types is None else types)
    unknown = sorted(set(names) - set(DEGRADATIONS))
    if unknown:
        raise ValueError(f"unknown degradations {unknown}; expected names from {DEGRADATIONS}")
    excluded = NOT_IN_MICROSCOPY if microscopy else ()
    allowed = [n for n in DEGRADATIONS if n in names and n not in excluded]
    if not allowed:
        raise ValueError(
            f"no degradation left to choose from ({', '.join(excluded)} excluded for microscopy)"
        )
    return allowed


def check_type_weights(weights: Mapping[str, float] | None) -> None:
    """Raise ValueError unless `weights` maps names from DEGRADATIONS to positive numbers."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(DEGRADATIONS))
    if unknown:
        raise ValueError(f"unknown degradations {unknown} in weights; expected {DEGRADATIONS}")
    if any(not float(w) > 0 for w in weights.values()):
        raise ValueError(f"type weights must be positive, got {weights}")


def _type_weights(allowed: list[str], weights: Mapping[str, float] | None) -> list[float]:
    check_type_weights(weights)
    weights = weights or {}
    return [float(weights.get(name, 1.0)) for name in allowed]


def _choose(
    like: Tensor,
    weights: list[float],
    generator: torch.Generator,
    mix_probability: float,
    max_mixed: int,
    clean_probability: float,
) -> Tensor:
    """Pick per sample 0, 1 or 2..max_mixed of the types (one weight each): a (B, n) mask.

    Types are drawn without replacement with probabilities proportional to their weights
    (Efraimidis-Spirakis keys; equal weights give a uniform draw).
    """
    b, n = like.shape[0], len(weights)
    u = rand((b, 3), generator, like)
    count = torch.ones(b, device=like.device)
    top = min(max_mixed, n)
    if top >= 2:
        mixed = 2 + (u[:, 2] * (top - 1)).floor().clamp(max=top - 2)
        count = torch.where(u[:, 1] < mix_probability, mixed.float(), count)
    count = torch.where(u[:, 0] < clean_probability, torch.zeros_like(count), count)
    w = torch.tensor(weights, device=like.device, dtype=like.dtype)
    keys = -((1 - rand((b, n), generator, like)) ** (1 / w))
    rank = keys.argsort(dim=1).argsort(dim=1)
    return rank < count.view(-1, 1)


def synthesize(
    clean: Tensor,
    generator: torch.Generator,
    *,
    types: Sequence[str] | None = None,
    mix_probability: float = 0.3,
    max_mixed: int = 3,
    clean_probability: float = 0.05,
    microscopy: bool = False,
    weights: Mapping[str, float] | None = None,
) -> DegradedBatch:
    """Degrade a clean batch (B, C, H, W) in [0, 1] at random, deterministically given
    ``generator``.

    Each sample is left clean with probability ``clean_probability``; otherwise it gets one
    degradation type, or with probability ``mix_probability`` 2..``max_mixed`` distinct types,
    drawn from ``types`` (default: all) in proportion to ``weights`` (name -> weight, 1 for a
    name left out), each at a uniform random severity, applied in ORDER.
    ``microscopy`` uses the microscopy variants and never picks NOT_IN_MICROSCOPY.
    """
    allowed = _allowed(types, microscopy)
    columns = [DEGRADATIONS.index(n) for n in allowed]
    chosen = _choose(
        clean,
        _type_weights(allowed, weights),
        generator,
        mix_probability,
        max_mixed,
        clean_probability,
    )
    labels = torch.zeros(clean.shape[0], len(DEGRADATIONS), device=clean.device, dtype=clean.dtype)
    labels[:, columns] = chosen.to(clean.dtype)
    severities = rand(labels.shape, generator, clean) * labels
    degraded = clean.clone()
    for name in ORDER:
        column = DEGRADATIONS.index(name)
        rows = labels[:, column] > 0
        if rows.any():
            degraded[rows] = apply(
                degraded[rows], name, severities[rows, column], generator, microscopy
            )
    return DegradedBatch(degraded, labels, severities)
