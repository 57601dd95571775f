"""What ``scaling="auto"`` restores with: the exposure corrected only for an 8-bit colour photo
that reads as under-exposed throughout.

By default the Restorer keeps the exposure (percentile scaling; `allinone.infer.exposure`),
because a blind model let free to correct it brightens the dark parts of plain noisy photos. But
then an under-exposed photo comes back as dark as it went in (the first 8 CBSD68 photos under the
benchmark's low light: 8.4 dB in and out; 21.8 dB when asked for ``"range"``).

So before restoring an 8-bit colour photo, the composition head reads low light in a grid of
windows spread over the (middle) plane, by the dtype's range, as `Restorer.analyze` reads it. The
exposure is corrected (``"range"``) when the windows together read it as likely as
`UNDER_EXPOSED` and nearly all of them (`AGREEING`) read it more likely than not. The second test
matters because the correction is made tile by tile: a dark-by-nature photo whose sparse bright
objects read as well exposed (skimage ``hubble_deep_field``: 0.76 overall, a fifth of its
windows below 0.5) would come back as a blotchy grey sky with black holes. Other dtypes
(microscopy, scientific cameras) and grey images always keep their exposure: a dim fluorescence
image is the signal, not an exposure to correct.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable

import numpy as np
from scipy.special import expit

from allinone.errors import AllInOneWarning
from allinone.infer.axes import PlaneLayout

WINDOW = 128
"""Side in pixels of the windows read (the plane's side where it is smaller)."""
GRID = 3
"""Windows per side of the grid spread over the plane."""
UNDER_EXPOSED = 0.9
"""Low-light probability (from the windows' mean logit) from which a photo is under-exposed."""
AGREEING = 0.85
"""Fraction of the windows that must each read low light as more likely than not."""


def is_photo(dtype: np.dtype, layout: PlaneLayout) -> bool:
    """An 8-bit colour image: the kind whose exposure the network may judge and correct."""
    return np.dtype(dtype) == np.uint8 and layout.rgb


def _starts(length: int, size: int, count: int) -> list[int]:
    return sorted({round(float(s)) for s in np.linspace(0, length - size, count)})


def probe_windows(
    shape: tuple[int, int], window: int = WINDOW, grid: int = GRID
) -> list[tuple[slice, slice]]:
    """(rows, cols) slices of up to `grid` x `grid` windows of `window` pixels (fewer, or
    smaller, where the plane is small) spread evenly over a plane of `shape`."""
    height, width = shape
    size_y, size_x = min(window, height), min(window, width)
    return [
        (slice(y, y + size_y), slice(x, x + size_x))
        for y in _starts(height, size_y, grid)
        for x in _starts(width, size_x, grid)
    ]


def reads_under_exposed(logits: np.ndarray) -> bool:
    """Whether the windows' low-light `logits` (one each) call for correcting the exposure."""
    logits = np.asarray(logits, dtype=np.float64)
    overall = expit(logits.mean())
    agreeing = np.mean(logits > 0)
    return bool(overall >= UNDER_EXPOSED and agreeing >= AGREEING)


def read_windows(array, layout: PlaneLayout) -> list[np.ndarray]:
    """The `probe_windows` of the middle plane of `array`, each (h, w, 3) for colour (alpha
    dropped) or (h, w, 1), read a band of rows at a time."""
    middle = tuple(n // 2 for n in layout.lead_shape)
    windows = []
    for rows, spans in itertools.groupby(probe_windows(layout.plane_shape), key=lambda w: w[0]):
        band = layout.get(array, middle, rows=rows)
        band = band[..., :3] if layout.rgb else band[..., None]
        windows += [band[:, cols] for _, cols in spans]
    return windows


def choose_scaling(
    array, layout: PlaneLayout, scaling: str, read_low_light: Callable[[np.ndarray], float]
) -> str:
    """`scaling`, with ``"auto"`` resolved: ``"range"`` for an under-exposed photo, else
    ``"percentile"``. `read_low_light` gives the low-light logit of one (h, w, 3) uint8 window."""
    if scaling != "auto":
        return scaling
    if not is_photo(array.dtype, layout):
        return "percentile"
    logits = [read_low_light(window) for window in read_windows(array, layout)]
    if not reads_under_exposed(np.array(logits)):
        return "percentile"
    warnings.warn(
        f"the image reads as under-exposed (low light {expit(np.mean(logits)):.2f}): correcting "
        "its exposure; choose percentile scaling (keep exposure) to keep it as it is",
        AllInOneWarning,
        stacklevel=2,
    )
    return "range"
