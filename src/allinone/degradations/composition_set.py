"""The composition test set: what the benchmark and the composition head's validation make of a
photo.

`allinone.evaluate` scores `Restorer.analyze`, and `allinone.train.composition` validates the
retrained head, on centre crops of `COMPOSITION_CROP` pixels under each type alone at
`COMPOSITION_SEVERITIES` and under `MIXTURES_PER_IMAGE` mixtures of 2-3 types.
"""

from __future__ import annotations

import numpy as np

COMPOSITION_SEVERITIES: tuple[float, ...] = (0.25, 0.5, 0.75)
MIXTURES_PER_IMAGE = 3
COMPOSITION_CROP = 256


def crop_centre(image: np.ndarray, size: int) -> np.ndarray:
    """Centre crop to at most `size` x `size`."""
    h, w = image.shape[:2]
    y, x = (h - min(h, size)) // 2, (w - min(w, size)) // 2
    return image[y : y + size, x : x + size]
