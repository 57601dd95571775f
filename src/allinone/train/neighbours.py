"""Self-supervised denoising from noisy images alone (Neighbor2Neighbor, Huang et al., CVPR 2021).

Each 2x2 cell of a noisy image gives two half-size images: one pixel of the cell to the first, a
horizontal or vertical neighbour of it to the second. Where the noise is independent from pixel
to pixel (photon and read noise, synthetic Gaussian noise), the second image is a noisy target
for the first whose noise the network cannot predict, so learning to map one to the other learns
to remove the noise and nothing else. A regulariser keeps the network's output on the full image
consistent with its output on the half-size one (the paper's gamma term), against the
over-smoothing the half-pixel shift between the two images would teach.

Noise correlated between neighbouring pixels (demosaicked or JPEG-compressed photos, denoised
or resampled images) is seen as signal and kept; so are blur, haze and every other degradation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

NEIGHBOURS = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 0], [1, 3], [3, 1], [2, 3], [3, 2]])
"""Ordered pairs of neighbouring pixels of a 2x2 cell, pixels numbered row by row."""
REGULARISER = 1.0
"""Weight of the consistency term (the paper's gamma)."""
SPACING = 4
"""One pixel of every `SPACING` x `SPACING` block is a blind spot in validation (`blind_spots`)."""


def draw_neighbours(rng: np.random.Generator, shape: tuple[int, int, int]) -> torch.Tensor:
    """(B, h, w, 2) cell pixel indices: a random neighbouring pair for each of B x h x w cells."""
    return NEIGHBOURS[torch.from_numpy(rng.integers(len(NEIGHBOURS), size=shape))]


def subsample(x: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, H/2, W/2): from each 2x2 cell, the pixel `pixels` (B, h, w) names."""
    batch, channels, height, width = x.shape
    cells = F.pixel_unshuffle(x, 2).view(batch, channels, 4, height // 2, width // 2)
    index = pixels.to(x.device)[:, None, None].expand(batch, channels, 1, -1, -1)
    return cells.gather(2, index).squeeze(2)


def neighbour_pair(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two half-size images of an (H, W, C) array (H and W even): the pixels of its 2x2 cells and
    a random neighbour of each."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    pixels = draw_neighbours(rng, (1, image.shape[0] // 2, image.shape[1] // 2))
    first, second = (subsample(x, pixels[..., k]) for k in (0, 1))
    return first[0].permute(1, 2, 0).numpy(), second[0].permute(1, 2, 0).numpy()


def neighbour_loss(
    restore: Callable[[torch.Tensor], torch.Tensor], noisy: torch.Tensor, rng: np.random.Generator
) -> torch.Tensor:
    """The Neighbor2Neighbor loss of `restore` on a (B, C, H, W) batch of noisy patches (H and W
    even): MSE between the restored first half-size image and the second, plus `REGULARISER`
    times the MSE of that difference against the same difference of the full-size restoration."""
    batch, _, height, width = noisy.shape
    pixels = draw_neighbours(rng, (batch, height // 2, width // 2))
    first, second = pixels[..., 0], pixels[..., 1]
    with torch.no_grad():
        full = restore(noisy).float()
    difference = restore(subsample(noisy, first)).float() - subsample(noisy, second)
    shift = subsample(full, first) - subsample(full, second)
    return difference.pow(2).mean() + REGULARISER * (difference - shift).pow(2).mean()


def blind_spots(
    image: np.ndarray, rng: np.random.Generator, offset: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(masked image, mask) for validating without a clean image (Noise2Self, Batson and Royer,
    ICML 2019): one pixel of every `SPACING` x `SPACING` block of an (H, W, C) array, at an offset
    drawn with `rng` (or the given (dy, dx) `offset`), replaced by the mean of its four
    neighbours; `mask` (H, W) marks them.

    A restoration of the masked image never saw the noise of the masked pixels, so its squared
    error against their noisy values is, on average, its error against the clean image plus the
    noise variance, for the restoration of the masked image: the score ranks how well a network
    fills in hidden pixels, which is not always how well it restores seen ones
    (`benchmarks/ADAPTATION.md`)."""
    height, width = image.shape[:2]
    dy, dx = offset if offset is not None else (int(v) for v in rng.integers(SPACING, size=2))
    mask = np.zeros((height, width), bool)
    mask[dy::SPACING, dx::SPACING] = True
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="reflect")
    neighbours = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:]) / 4
    masked = np.where(mask[:, :, None], neighbours, image).astype(image.dtype)
    return masked, mask
