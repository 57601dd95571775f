"""The classical baselines of the photo protocols: (C)BM3D or NL-means, Richardson-Lucy, CLAHE
and the dark channel prior (the microscopy ones are `allinone.microscopy_baselines`)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage import exposure, restoration

from allinone import microscopy_baselines as mb
from allinone.evaluate.images import to_uint8

RL_ITERATIONS = 30


def classical_denoiser_name(grey: bool = False) -> str:
    """The label of the classical denoiser this installation runs."""
    if mb.bm3d_module() is None:
        return "NL-means (skimage; bm3d not installed)"
    return "BM3D" if grey else "CBM3D"


def denoise_classical(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """(C)BM3D with noise sigma `sigma` (8-bit units) or, without `bm3d`, NL-means."""
    bm3d = mb.bm3d_module()
    x, s = noisy / 255.0, sigma / 255.0
    if bm3d is not None:
        return to_uint8(bm3d.bm3d_rgb(x, s) if noisy.ndim == 3 else bm3d.bm3d(x, s))
    channel_axis = 2 if noisy.ndim == 3 else None
    return to_uint8(
        restoration.denoise_nl_means(
            x, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, channel_axis=channel_axis
        )
    )


def richardson_lucy(blurred: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Richardson-Lucy per channel with the true kernel.

    The image is padded symmetrically by twice the kernel size, so that the zero boundary of
    `skimage`'s convolutions does not leak into the image over the iterations.
    """
    pad = 2 * kernel.shape[0]
    x = np.pad(blurred / 255.0, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    channels = [
        restoration.richardson_lucy(x[:, :, c], kernel, num_iter=RL_ITERATIONS) for c in range(3)
    ]
    return to_uint8(np.stack(channels, axis=2)[pad:-pad, pad:-pad])


def clahe(image: np.ndarray) -> np.ndarray:
    """CLAHE on the HSV value channel (`skimage.exposure.equalize_adapthist` defaults)."""
    return to_uint8(exposure.equalize_adapthist(image))


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.uniform_filter(x, size=2 * radius + 1, mode="reflect")


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s grey guided filter (box windows of the given radius)."""
    mean_g, mean_s = _box(guide, radius), _box(source, radius)
    var_g = _box(guide * guide, radius) - mean_g**2
    a = (_box(guide * source, radius) - mean_g * mean_s) / (var_g + eps)
    b = mean_s - a * mean_g
    return _box(a, radius) * guide + _box(b, radius)


def dark_channel_prior(hazy: np.ndarray, patch: int = 15, omega: float = 0.95) -> np.ndarray:
    """He et al.'s dark channel prior dehazing, with a guided-filter refined transmission."""
    x = hazy / 255.0
    dark = ndimage.minimum_filter(x.min(axis=2), size=patch)
    brightest = np.argsort(dark.ravel())[-max(1, dark.size // 1000) :]
    candidates = x.reshape(-1, 3)[brightest]
    air = candidates[candidates.sum(axis=1).argmax()].clip(1e-3, 1)
    coarse = 1 - omega * ndimage.minimum_filter((x / air).min(axis=2), size=patch)
    transmission = guided_filter(x.mean(axis=2), coarse, radius=60, eps=1e-4)
    clear = (x - air) / np.maximum(transmission, 0.1)[:, :, None] + air
    return to_uint8(clear)
