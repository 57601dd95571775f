"""Reading the benchmark's 8-bit images and moving them between uint8, float and torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit image as (H, W, 3); grey is replicated."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit grey image as (H, W)."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    return image if image.ndim == 2 else image[:, :, 0]


def crop_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Top-left crop to height and width multiples of `multiple`."""
    h, w = image.shape[:2]
    return image[: h - h % multiple, : w - w % multiple]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to uint8, rounded and clipped."""
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """An 8-bit (H, W, 3) image as a (1, 3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def from_tensor(x: torch.Tensor) -> np.ndarray:
    """The first image of a (B, 3, H, W) tensor in [0, 1] as 8-bit (H, W, 3)."""
    return to_uint8(x[0].permute(1, 2, 0).numpy())
