"""The detector: photons to stored counts, with the noise and the limits of a real camera or PMT.

A pixel of expected density d collects Poisson(photons * d) photoelectrons; a multiplying stage
(a PMT, an EMCCD) adds its excess noise (the variance doubles); read noise adds a Gaussian of
`read_noise` electrons; `gain` turns electrons into counts above an `offset`; the value is
rounded and clipped to the `bits` of the file (8, 12 or 16), so a bright structure can saturate.

The clean reference is what an average of many frames would show: the expected count, clipped
as the frames were (a Gaussian approximation of the clipped mean), so a dark background that
noise pushes below zero reads as the frames' average does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor

from allinone.degradations._common import Param, per_sample, poisson, randn, view4

BITS: tuple[int, ...] = (8, 12, 16)
TRAINING_BITS: tuple[int, ...] = (8, 16)
HELD_OUT_BITS: tuple[int, ...] = (12,)
"""Detector depths never drawn in training (a 12-bit camera in uint16 files)."""
PHOTONS = (1.0, 1000.0)
"""Range of expected photons at the brightest pixel (log-uniform)."""


@dataclass(frozen=True)
class Detector:
    """One detector setting; each field a number, or a (B,) tensor for a batch."""

    photons: Param
    """Expected photoelectrons at density 1."""
    gain: Param
    """Counts per photoelectron."""
    offset: Param
    """Counts added to every pixel (the dark level)."""
    read_noise: Param
    """Read noise, electrons rms."""
    bits: int
    """Depth of the stored counts."""
    multiplying: Param = 0.0
    """1 for a multiplying detector (excess noise factor 2), 0 for none."""

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16)

    @property
    def full_scale(self) -> float:
        return float(2**self.bits - 1)

    def severity(self) -> Tensor:
        """Noise severity in [0, 1]: 0 at 1000 photons, 1 at 1 photon (log scale)."""
        photons = torch.as_tensor(self.photons, dtype=torch.float32)
        return ((3 - torch.log10(photons)) / 3).clamp(0, 1)


def draw_detector(rng: np.random.Generator, bits: tuple[int, ...] = TRAINING_BITS) -> Detector:
    """A random setting: photons log-uniform in `PHOTONS`, the brightest structure filling 10 %
    to 130 % of an 8-bit range (0.5 % to 130 % of a deeper one: a 12-bit camera in a 16-bit file
    fills a sixteenth), an offset of up to 4 % of the range, read noise of 0 to 6 electrons
    (mostly under 1), a multiplying stage for a third of the settings."""
    depth = int(rng.choice(bits))
    full = float(2**depth - 1)
    photons = float(np.exp(rng.uniform(*np.log(PHOTONS))))
    offset = float(rng.uniform(0, 0.04) * full) if rng.random() < 0.8 else 0.0
    fill = rng.uniform(0.1, 1.3) if depth == 8 else np.exp(rng.uniform(np.log(0.005), np.log(1.3)))
    span = max(fill * full - offset, 8.0)
    return Detector(
        photons=photons,
        gain=span / photons,
        offset=offset,
        read_noise=float(6 * rng.random() ** 3),
        bits=depth,
        multiplying=float(rng.random() < 1 / 3),
    )


def stack_detectors(detectors: list[Detector]) -> Detector:
    """Many settings of one depth as a batch."""
    depths = {d.bits for d in detectors}
    if len(depths) != 1:
        raise ValueError(f"a detector batch has one depth, got {sorted(depths)}")
    values = {
        f.name: torch.tensor([float(getattr(d, f.name)) for d in detectors])
        for f in fields(Detector)
        if f.name != "bits"
    }
    return Detector(bits=depths.pop(), **values)


def _clipped_mean(mean: Tensor, sigma: Tensor, high: float) -> Tensor:
    """E[clip(X, 0, high)] for X ~ N(mean, sigma^2)."""
    sigma = sigma.clamp_min(1e-6)
    a, b = -mean / sigma, (high - mean) / sigma
    cdf_a, cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)
    pdf = torch.exp(-0.5 * a**2) - torch.exp(-0.5 * b**2)
    inside = mean * (cdf_b - cdf_a) + sigma * pdf / np.sqrt(2 * np.pi)
    return inside + high * (1 - cdf_b)


def expose(
    density: Tensor, detector: Detector, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """(noisy counts, clean reference) of a (B, C, H, W) expected density, both float tensors
    on the counts' scale (integers in [0, full scale] for the noisy one)."""
    photons = view4(per_sample(detector.photons, density))
    gain = view4(per_sample(detector.gain, density))
    offset = view4(per_sample(detector.offset, density))
    read = view4(per_sample(detector.read_noise, density))
    excess = view4(per_sample(detector.multiplying, density))
    rate = photons * density.clamp_min(0)
    electrons = poisson(rate, generator)
    electrons = electrons + excess * electrons.sqrt() * randn(density.shape, generator, density)
    electrons = electrons.clamp_min(0) + read * randn(density.shape, generator, density)
    full = detector.full_scale
    noisy = (gain * electrons + offset).round().clamp(0, full)
    sigma = gain * torch.sqrt(rate * (1 + excess) + read**2)
    return noisy, _clipped_mean(gain * rate + offset, sigma, full)


def acquire(density: np.ndarray, detector: Detector, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(one frame, the average of many) of an expected density of any shape, both as counts in
    the detector's dtype (the average rounded): a pair on one intensity scale."""
    x = torch.from_numpy(np.ascontiguousarray(density, dtype=np.float32)).reshape(
        1, 1, -1, density.shape[-1]
    )
    noisy, clean = expose(x, detector, torch.Generator().manual_seed(seed))
    frame, average = (
        t.reshape(density.shape).round().numpy().astype(detector.dtype) for t in (noisy, clean)
    )
    return frame, average
