"""Sample data: microscopy acquired from the engine's procedural specimens, and scikit-image's
photographs degraded by the engine.

Each sample opens two layers: the degraded image and, hidden, its clean counterpart on the same
intensity scale (a ready pair for the Fine-tune widget): for microscopy the average of many
frames of the same specimen, for photos the photo itself. Torch loads only when a sample is
opened.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LayerData = tuple[np.ndarray, dict, str]
Step = tuple[str, float]
SEED = 0


def _degrade(image: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    """Apply the engine's degradations, in order, to an (H, W, 3) float photo in [0, 1]."""
    import torch

    from allinone.degradations import apply

    generator = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        for name, severity in steps:
            x = apply(x, name, severity, generator).clamp(0, 1)
    return x[0].permute(1, 2, 0).numpy()


def _pair(clean: np.ndarray, steps: Sequence[Step], name: str) -> list[LayerData]:
    """The degraded photo and its hidden clean original, as napari layer data."""
    degraded = (_degrade(clean / 255.0, steps) * 255).round().astype(np.uint8)
    return [
        (clean, {"name": f"{name} (clean)", "visible": False, "rgb": True}, "image"),
        (degraded, {"name": name, "rgb": True}, "image"),
    ]


def _acquisition(
    shape: tuple[int, ...], families: Sequence[str], kind: str, camera
) -> tuple[np.ndarray, np.ndarray]:
    """(one noisy frame, the average of many) of a procedural specimen, in camera counts."""
    from allinone.microscopy import acquire, draw_optics, image

    rng = np.random.default_rng(SEED)
    density = image(rng, shape, draw_optics(rng, kind), families)
    return acquire(density, camera, SEED)


def _micrograph(noisy: np.ndarray, clean: np.ndarray, name: str, scale) -> list[LayerData]:
    """A noisy acquisition and its hidden clean average, shown on one display range."""
    limits = tuple(float(v) for v in np.percentile(clean, [0.1, 99.9]))
    options = {"colormap": "green", "contrast_limits": limits, "scale": scale}
    return [
        (clean, {"name": f"{name} (clean)", "visible": False, **options}, "image"),
        (noisy, {"name": name, **options}, "image"),
    ]


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
    """A noisy confocal stack of nuclei (24 x 128 x 128, uint16, Z sampled 3x coarser than Y
    and X) at about 20 photons at the brightest pixel, and its clean average."""
    from allinone.microscopy import Detector

    camera = Detector(photons=20.0, gain=2.0, offset=100.0, read_noise=1.5, bits=16)
    noisy, clean = _acquisition((24, 128, 128), ["nuclei"], "confocal", camera)
    return _micrograph(noisy, clean, "noisy nuclei stack", (3.0, 1.0, 1.0))


def noisy_fluorescence() -> list[LayerData]:
    """A dim widefield image of filaments and nuclei (256 x 256, uint16) at about 10 photons at
    the brightest pixel, and its clean average."""
    from allinone.microscopy import Detector

    camera = Detector(photons=10.0, gain=4.0, offset=100.0, read_noise=1.0, bits=16)
    noisy, clean = _acquisition((256, 256), ["filaments", "nuclei"], "widefield", camera)
    return _micrograph(noisy, clean, "noisy fluorescence", (1.0, 1.0))


def hazy_photo() -> list[LayerData]:
    """The astronaut behind haze."""
    return _pair(_photo("astronaut", 2), [("haze", 0.6)], "hazy astronaut")


def rainy_photo() -> list[LayerData]:
    """A cup of coffee seen through rain streaks."""
    return _pair(_photo("coffee", 2), [("rain", 0.6)], "rainy coffee")


def dark_photo() -> list[LayerData]:
    """The rocket on its launch pad, under-exposed (the training sampler's low light)."""
    return _pair(_photo("rocket", 2), [("low_light", 0.5)], "dark rocket")


def mixed_photo() -> list[LayerData]:
    """Chelsea the cat, blurred, hazy and noisy at once."""
    steps = [("blur", 0.4), ("haze", 0.4), ("noise", 0.4)]
    return _pair(_photo("chelsea"), steps, "mixed chelsea")
