"""What ``scaling="auto"`` restores with: an 8-bit colour photo's under-exposure undone, else the
exposure kept.

By default the Restorer keeps the exposure (percentile scaling; `allinone.infer.tone`),
because a blind model let free to correct it brightens the dark parts of plain noisy photos. Nor
can the restoration network judge exposure: it learnt from 64-pixel patches, over which the
exposure to restore is ambiguous, and brightened a photo three stops under by nothing (first 8
CBSD68 photos: 10.1 dB in and out).

So before restoring an 8-bit colour photo, the exposure estimator (`allinone.models.exposure`)
reads an overview of the whole (middle) plane and gives the tone curve that darkened it. Where
that curve brightens the brighter parts of the overview (its `LEVEL` quantile of brightness) by
at least `STOPS` stops, the photo is restored
through a normalisation that undoes it (`Normalization.curve`) and keeps the exposure of the
result: the network then sees a well-exposed photo and removes what the darkening brought with it
(noise, 8-bit steps in the shadows). Other dtypes (microscopy, scientific cameras) and grey
images always keep their exposure: a dim fluorescence image is the signal, not an exposure to
correct. Asked to correct the exposure (``"range"``), the Restorer undoes the estimated curve of
an 8-bit colour photo from a quarter of a stop (`NOTICEABLE`) and lets the network brighten
further: on its own the network left a photo three stops under at 10.2 dB.
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable

import numpy as np

from allinone.errors import AllInOneWarning
from allinone.infer.axes import PlaneLayout
from allinone.infer.normalize import Normalization, fit_normalization
from allinone.infer.scene import overview
from allinone.models.exposure import overview_factor
from allinone.tone_curve import ToneCurve

WINDOW = 128
"""Side in pixels of the windows read (the plane's side where it is smaller)."""
GRID = 3
"""Windows per side of the grid spread over the plane."""
LEVEL = 0.9
"""The quantile of the overview's brightness (mean of the channels) at which the brightening is
judged: the bright parts of a well-exposed photo are bright, a dark-by-nature scene's too."""
STOPS = 0.75
"""Brightening at `LEVEL`, in stops, from which a photo is under-exposed. Measured with the shipped
estimator (brightening at `LEVEL`): clean photos of CBSD68 (68), Set14 (14), Urban100 crops
(50), Rain100H (106, rainy and clean) read at most 0.63 stops; SOTS-indoor 1 of 50 (a dark
clean room, 1.08) and DIV2K crops 6 of 100 (dark scenes, 0.75-1.39; trained on) over `STOPS`;
CBSD68 three stops under (linear light) 68 of 68 (1.09-2.05), two stops under 56 of 68, one
stop under 8 of 68."""
NOTICEABLE = 0.25
"""Brightening at `LEVEL`, in stops, from which ``"range"`` undoes the estimated curve: below it
the estimate is the estimator's own scatter (clean CBSD68 photos read at most 0.12 stops)."""
BAND = 256
"""Rows of the plane read at a time for the overview (rounded to whole blocks)."""


def is_photo(dtype: np.dtype, layout: PlaneLayout) -> bool:
    """An 8-bit colour image: the kind whose exposure may be judged and corrected."""
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


def _middle(layout: PlaneLayout) -> tuple[int, ...]:
    return tuple(n // 2 for n in layout.lead_shape)


def read_windows(array, layout: PlaneLayout) -> list[np.ndarray]:
    """The `probe_windows` of the middle plane of `array`, each (h, w, 3) for colour (alpha
    dropped) or (h, w, 1), read a band of rows at a time."""
    windows = []
    for rows, spans in itertools.groupby(probe_windows(layout.plane_shape), key=lambda w: w[0]):
        band = layout.get(array, _middle(layout), rows=rows)
        band = band[..., :3] if layout.rgb else band[..., None]
        windows += [band[:, cols] for _, cols in spans]
    return windows


def photo_overview(array, layout: PlaneLayout) -> np.ndarray:
    """(h, w, 3) block means in [0, 1] of the middle plane of an 8-bit colour `array` (alpha
    dropped) in blocks of `overview_factor` pixels, read `BAND` rows at a time."""
    height, width = layout.plane_shape
    factor = overview_factor(height, width)
    band = factor * max(1, BAND // factor)
    chunks = (
        np.asarray(layout.get(array, _middle(layout), rows=slice(y, y + band))[..., :3], np.float32)
        for y in range(0, height, band)
    )
    return overview(chunks, width, factor) / 255.0


def under_exposure(
    array, layout: PlaneLayout, estimate: Callable[[np.ndarray], ToneCurve]
) -> tuple[ToneCurve, float]:
    """The darkening that `estimate` reads in the `photo_overview` of an 8-bit colour `array`,
    and how many stops undoing it brightens the overview at its `LEVEL` quantile."""
    view = photo_overview(array, layout)
    curve = estimate(view)
    return curve, curve.stops(max(float(np.quantile(view.mean(axis=2), LEVEL)), 1 / 255))


def describe(stops: float) -> str:
    """What `under_exposure`'s `stops` mean for a restore with ``"auto"`` scaling, in words."""
    if stops < STOPS:
        return f"kept (reads {stops:.1f} stops under; auto restore corrects from {STOPS:g})"
    return f"{stops:.1f} stops under: auto restore corrects it"


def choose_normalization(
    array, layout: PlaneLayout, scaling: str, estimate: Callable[[np.ndarray], ToneCurve]
) -> Normalization:
    """`fit_normalization(array, scaling)`, except for an 8-bit colour photo: with ``"auto"``,
    one whose `estimate`d curve (from its (h, w, 3) `photo_overview`) brightens it by `STOPS` or
    more (at `LEVEL`) gets a normalisation that undoes the curve and keeps the exposure of the
    result (with an `AllInOneWarning`), any other ``"percentile"``; with ``"range"`` (correct the
    exposure), the curve is undone from `NOTICEABLE` stops and the network may brighten further."""
    if scaling == "range" and is_photo(array.dtype, layout):
        curve, brightening = under_exposure(array, layout, estimate)
        if brightening >= NOTICEABLE:
            return dataclasses.replace(fit_normalization(array, "range"), curve=curve)
    if scaling != "auto":
        return fit_normalization(array, scaling)
    if not is_photo(array.dtype, layout):
        return fit_normalization(array, "percentile")
    curve, brightening = under_exposure(array, layout, estimate)
    if brightening < STOPS:
        return fit_normalization(array, "percentile")
    warnings.warn(
        f"the image reads as under-exposed (by {brightening:.1f} stops in its bright parts): "
        "correcting its exposure; choose percentile scaling (keep exposure) to keep it as it is",
        AllInOneWarning,
        stacklevel=2,
    )
    range_norm = fit_normalization(array, "range")
    return dataclasses.replace(range_norm, keep_exposure=True, curve=curve)
