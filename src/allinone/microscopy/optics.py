"""Imaging a fluorophore density: the point spread function and the light from out of focus.

A Gaussian stands in for the PSF's core (sigma in pixels, wider for a widefield microscope than
for a confocal one, and wider again along Z in a stack: `axial_ratio`). Out-of-focus light is a
second scene blurred far more, added below the in-focus one (strong in widefield, faint in a
confocal), with a constant autofluorescence floor. The result is the expected photon density,
its brightest structure at 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from allinone.microscopy.scenes import TRAINING_FAMILIES, Shape, scene


@dataclass(frozen=True)
class Optics:
    """How a scene is imaged: PSF widths and the share of out-of-focus light."""

    kind: str
    """"confocal" or "widefield"."""
    lateral_sigma: float
    """The PSF's lateral sigma, pixels."""
    axial_ratio: float
    """Axial over lateral sigma, for stacks."""
    out_of_focus: float
    """Brightest out-of-focus light over the brightest in-focus structure."""
    defocus_sigma: float
    """Blur of the out-of-focus light, pixels."""
    floor: float
    """Constant autofluorescence, as a share of the brightest structure."""


KINDS: tuple[str, ...] = ("confocal", "widefield")


def draw_optics(rng: np.random.Generator, kind: str | None = None) -> Optics:
    """Random optics of `kind` (default: either, equally likely)."""
    kind = kind or str(rng.choice(KINDS))
    if kind not in KINDS:
        raise ValueError(f"unknown microscope {kind!r}; expected one of {KINDS}")
    confocal = kind == "confocal"
    return Optics(
        kind=kind,
        lateral_sigma=float(rng.uniform(0.5, 1.3) if confocal else rng.uniform(0.9, 2.2)),
        axial_ratio=float(rng.uniform(2.0, 4.0)),
        out_of_focus=float(rng.uniform(0, 0.15) if confocal else rng.uniform(0.05, 0.6)),
        defocus_sigma=float(rng.uniform(4, 24)),
        floor=float(rng.uniform(0, 0.08)),
    )


def blur(density: np.ndarray, optics: Optics) -> np.ndarray:
    """`density` (2-D, or 3-D with Z first) through the PSF."""
    sigma = [optics.lateral_sigma] * density.ndim
    if density.ndim == 3:
        sigma[0] *= optics.axial_ratio
    return ndimage.gaussian_filter(density, sigma, mode="reflect")


def image(
    rng: np.random.Generator,
    shape: Shape,
    optics: Optics,
    families: Sequence[str] = TRAINING_FAMILIES,
) -> np.ndarray:
    """The expected photon density (float32, brightest structure at 1) of a random scene of
    `families` imaged with `optics`: in focus, out of focus and the floor."""
    focused = blur(scene(rng, shape, families), optics)
    total = focused / max(float(np.percentile(focused, 99.95)), 1e-12)
    if optics.out_of_focus > 0:
        haze = ndimage.gaussian_filter(scene(rng, shape, families), optics.defocus_sigma)
        total = total + optics.out_of_focus * haze / max(float(haze.max()), 1e-12)
    total = total + optics.floor
    return (total / float(np.percentile(total, 99.95))).astype(np.float32)
