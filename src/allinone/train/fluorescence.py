"""Synthetic fluorescence pairs for training: procedural specimens under random detectors.

A pool of expected photon densities (`allinone.microscopy`: scenes of the training families
through confocal or widefield optics) is drawn once from the run's seed; each draw exposes one
whole pool plane through a fresh random detector (photons, gain, offset, read noise, depth,
multiplying stage), scales noisy counts and clean reference alike by the percentiles the
Restorer would fit to the noisy plane (`fit_normalization`, in the detector's dtype), then cuts
the same random patch, flip and rotation from both. So the network learns the full range of
photon budgets at the contrast and on the scale a restore shows it, and the clean reference is
what an average of many frames would read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from allinone.infer.normalize import fit_normalization
from allinone.microscopy import (
    TRAINING_BITS,
    TRAINING_FAMILIES,
    Detector,
    draw_detector,
    draw_optics,
    expose,
    image,
)


class FluorescencePool:
    """`count` pool planes of `size` pixels, drawn from `families` with `seed`."""

    def __init__(
        self,
        count: int,
        size: int,
        seed: int,
        families: Sequence[str] = TRAINING_FAMILIES,
        bits: tuple[int, ...] = TRAINING_BITS,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.planes = np.stack(
            [image(rng, (size, size), draw_optics(rng), families) for _ in range(count)]
        )
        self.bits = bits

    def _expose(self, index: int, detector: Detector, generator: torch.Generator):
        """(noisy, clean) of pool plane `index` in network units, (H, W) float32 each."""
        density = torch.from_numpy(self.planes[index])[None, None]
        noisy, clean = (t[0, 0].numpy() for t in expose(density, detector, generator))
        norm = fit_normalization(noisy.astype(detector.dtype), scaling="percentile")
        return norm.forward(noisy), norm.forward(clean)

    def sample(
        self, count: int, patch: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy, clean, noise severity): `count` grey patches (count, 3, patch, patch) and
        (count,) severities, deterministic given `generator` (on the CPU)."""
        noisy, clean, severity = [], [], []
        for _ in range(count):
            index = int(torch.randint(len(self.planes), (1,), generator=generator))
            seed = int(torch.randint(2**62, (1,), generator=generator))
            detector = draw_detector(np.random.default_rng(seed), self.bits)
            pair = np.stack(self._expose(index, detector, generator))
            pair = _augmented(_crop(pair, patch, generator), generator)
            noisy.append(pair[0])
            clean.append(pair[1])
            severity.append(float(detector.severity()))
        return _grey_batch(noisy), _grey_batch(clean), torch.tensor(severity)


def _grey_batch(planes: list[np.ndarray]) -> torch.Tensor:
    """(h, w) planes as a (B, 3, h, w) batch of grey images (one channel repeated)."""
    return torch.from_numpy(np.stack(planes))[:, None].expand(-1, 3, -1, -1)


def _crop(pair: np.ndarray, patch: int, generator: torch.Generator) -> np.ndarray:
    """The same random `patch`-pixel square of both planes of a (2, H, W) pair."""
    height, width = pair.shape[1:]
    p = min(patch, height, width)
    y = int(torch.randint(0, height - p + 1, (1,), generator=generator))
    x = int(torch.randint(0, width - p + 1, (1,), generator=generator))
    return pair[:, y : y + p, x : x + p]


def _augmented(pair: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """A random 90° rotation and flip, the same for both planes."""
    pair = np.rot90(pair, int(torch.randint(0, 4, (1,), generator=generator)), axes=(1, 2))
    if torch.rand(1, generator=generator) < 0.5:
        pair = pair[:, :, ::-1]
    return np.ascontiguousarray(pair)
