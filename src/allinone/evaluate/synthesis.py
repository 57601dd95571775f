"""The degradations the protocols synthesise, seeded per image, and their parameters."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage import color

from allinone.degradations import apply_kernel, low_light, motion_kernel
from allinone.evaluate.images import crop_multiple, from_tensor, to_tensor, to_uint8

SIGMAS: tuple[int, ...] = (15, 25, 50)
"""Gaussian noise sigmas of the denoising protocol, in 8-bit units."""
BLUR_LENGTH = 15.0
"""Camera-shake path length in pixels (severity 0.5 of the training sampler)."""
LOW_LIGHT = {"gamma": 2.5, "scale": 0.375, "photons": 10**2.9, "read_sigma": 1.5 / 255}
"""`low_light` parameters: severity 0.5 of the training sampler, at its largest gamma."""
EXPOSURE_STOPS = 3
"""Under-exposure of the second low-light protocol, in stops of linear light."""
HAZE_BETA = (0.8, 2.0)
HAZE_AIRLIGHT = (0.8, 1.0)


def add_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The papers' protocol: Gaussian noise added in uint8 space, rounded and clipped."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(image + rng.normal(0, sigma, image.shape)), 0, 255).astype(np.uint8)


def bicubic_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of `scale`, its Pillow-bicubic LR resized back to HR size)."""
    hr = crop_multiple(hr, scale)
    h, w = hr.shape[:2]
    low = Image.fromarray(hr).resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return hr, np.asarray(low.resize((w, h), Image.Resampling.BICUBIC))


def motion_blur(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the image blurred by a seeded camera-shake kernel, that kernel)."""
    kernel = motion_kernel(BLUR_LENGTH, torch.Generator().manual_seed(seed))[0]
    return from_tensor(apply_kernel(to_tensor(image), kernel)), kernel.numpy()


def add_scene_haze(image: np.ndarray, seed: int) -> np.ndarray:
    """An 8-bit colour image under I = J t + A (1 - t), t = exp(-beta * depth), with a depth
    map unlike the training one's: 0.6 x a vertical ramp (1 at the top, 0.2 at the bottom) plus
    0.4 x the inverted luminance blurred by a 15-pixel Gaussian (bright things near); beta in
    `HAZE_BETA` and the grey airlight A in `HAZE_AIRLIGHT`, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    beta, airlight = rng.uniform(*HAZE_BETA), rng.uniform(*HAZE_AIRLIGHT)
    clean = image.astype(np.float64) / 255
    ramp = np.linspace(1.0, 0.2, clean.shape[0])[:, None]
    luminance = color.rgb2gray(clean)
    depth = 0.6 * ramp + 0.4 * ndimage.gaussian_filter(1 - luminance, 15, mode="nearest")
    transmission = np.exp(-beta * depth)[..., None]
    return to_uint8(clean * transmission + airlight * (1 - transmission))


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve undone: [0, 1] encoded values to linear light."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] encoded with the sRGB transfer curve."""
    return np.where(values <= 0.0031308, 12.92 * values, 1.055 * values ** (1 / 2.4) - 0.055)


def underexpose(image: np.ndarray, stops: float = EXPOSURE_STOPS) -> np.ndarray:
    """An 8-bit sRGB photo taken `stops` stops darker: linear light divided by 2**stops and
    encoded again, with no noise (a camera that denoised its dark frame)."""
    linear = srgb_to_linear(image / 255.0) / 2**stops
    return to_uint8(linear_to_srgb(linear))


def darken(image: np.ndarray, seed: int) -> np.ndarray:
    """The image under `low_light` with the fixed `LOW_LIGHT` parameters."""
    generator = torch.Generator().manual_seed(seed)
    return from_tensor(low_light(to_tensor(image), generator=generator, **LOW_LIGHT))
