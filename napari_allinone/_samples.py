"""Sample data: images made from scikit-image's own data, degraded by the engine.

Each sample opens two layers: the degraded image and, hidden, the clean one it was made from
(a ready pair for the Fine-tune widget). Torch loads only when a sample is opened.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LayerData = tuple[np.ndarray, dict, str]
Step = tuple[str, float]
SEED = 0
COUNTS = (100.0, 4000.0)


def _degrade(image: np.ndarray, steps: Sequence[Step], rgb: bool) -> np.ndarray:
    """Apply the engine's degradations, in order, to a float image in [0, 1].

    Grey images are treated as microscopy (the engine's microscopy variants), colour as photos.
    """
    import torch

    from allinone.degradations import apply

    generator = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = x.permute(2, 0, 1)[None] if rgb else x.reshape(-1, 1, *x.shape[-2:])
    with torch.no_grad():
        for name, severity in steps:
            x = apply(x, name, severity, generator, microscopy=not rgb).clamp(0, 1)
    out = x[0].permute(1, 2, 0) if rgb else x.reshape(image.shape)
    return out.numpy()


def _pair(clean: np.ndarray, steps: Sequence[Step], name: str, rgb: bool = False) -> list:
    """The degraded layer and its hidden clean original, as napari layer data."""
    if rgb:
        degraded = (_degrade(clean / 255.0, steps, rgb=True) * 255).round().astype(np.uint8)
        return [
            (clean, {"name": f"{name} (clean)", "visible": False, "rgb": True}, "image"),
            (degraded, {"name": name, "rgb": True}, "image"),
        ]
    degraded = _degrade(clean, steps, rgb=False)
    options = {"colormap": "green", "contrast_limits": COUNTS}
    return [
        (_counts(clean), {"name": f"{name} (clean)", "visible": False, **options}, "image"),
        (_counts(degraded), {"name": name, **options}, "image"),
    ]


def _counts(image: np.ndarray) -> np.ndarray:
    """A [0, 1] image as uint16 camera counts."""
    low, high = COUNTS
    return (low + (high - low) * image).round().astype(np.uint16)


def _nuclei(shape: tuple[int, ...]) -> np.ndarray:
    """Blurred blobs that look like fluorescent nuclei, in [0, 1]."""
    from skimage.data import binary_blobs
    from skimage.filters import gaussian

    size = max(shape)
    blobs = binary_blobs(
        length=size, blob_size_fraction=0.08, n_dim=len(shape), volume_fraction=0.25, rng=SEED
    )
    blobs = blobs[tuple(slice(0, n) for n in shape)].astype(np.float32)
    image = gaussian(blobs, sigma=1.5)
    return (0.05 + 0.9 * image / image.max()).astype(np.float32)


def _photo(name: str, factor: int = 1) -> np.ndarray:
    """A scikit-image photograph, shrunk by `factor`, as uint8 RGB."""
    import skimage.data
    from skimage.transform import rescale

    image = getattr(skimage.data, name)()
    if factor == 1:
        return image
    small = rescale(image, 1 / factor, channel_axis=-1, anti_aliasing=True)
    return (small * 255).round().astype(np.uint8)


def noisy_stack() -> list[LayerData]:
    """A noisy 3-D stack of fluorescent nuclei (24 x 128 x 128, uint16)."""
    return _pair(_nuclei((24, 128, 128)), [("noise", 0.6)], "noisy nuclei stack")


def noisy_fluorescence() -> list[LayerData]:
    """A noisy, dim 2-D fluorescence-like image (256 x 256, uint16)."""
    steps = [("low_light", 0.4), ("noise", 0.5)]
    return _pair(_nuclei((256, 256)), steps, "noisy fluorescence")


def hazy_photo() -> list[LayerData]:
    """The astronaut behind haze."""
    return _pair(_photo("astronaut", 2), [("haze", 0.6)], "hazy astronaut", rgb=True)


def rainy_photo() -> list[LayerData]:
    """A cup of coffee seen through rain streaks."""
    return _pair(_photo("coffee", 2), [("rain", 0.6)], "rainy coffee", rgb=True)


def dark_photo() -> list[LayerData]:
    """The rocket on its launch pad, under-exposed (the training sampler's low light)."""
    return _pair(_photo("rocket", 2), [("low_light", 0.5)], "dark rocket", rgb=True)


def mixed_photo() -> list[LayerData]:
    """Chelsea the cat, blurred, hazy and noisy at once."""
    steps = [("blur", 0.4), ("haze", 0.4), ("noise", 0.4)]
    return _pair(_photo("chelsea"), steps, "mixed chelsea", rgb=True)
