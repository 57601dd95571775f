"""Dtype-aware scaling of images to the network's [0, 1] range, with an exact inverse."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from allinone.errors import InputError
from allinone.tone_curve import ToneCurve

LOW_PERCENTILE = 0.1
HIGH_PERCENTILE = 99.9
BULK_PERCENTILE = 95.0
"""The percentile that says how bright the bulk of a plane's structure reaches
(`Normalization.bulk`, `allinone.infer.local_gain`)."""
DIM_LEVEL = 0.5
"""Network units below which values are dim: where more than 100 - `BULK_PERCENTILE` per cent
of a plane's values reach it (large bright objects), its bulk is read among the dim values."""
SAMPLE_SIZE = 2**20
MIN_SAMPLED = 16


@dataclass(frozen=True)
class Normalization:
    """`x -> (x - offset) / scale` into the network's range, and back to `dtype`.

    `keep_exposure` (percentile scaling) asks the Restorer never to brighten the image
    (`allinone.infer.tone`); `bulk` lets it lift planes whose bulk is dim
    (`allinone.infer.local_gain`). With a `curve`, the forward map also undoes that under-exposure
    (`ToneCurve.undo`) and the inverse stays linear: the result comes back brightened."""

    offset: float
    scale: float
    dtype: np.dtype
    keep_exposure: bool = False
    curve: ToneCurve | None = None
    bulk: float | None = None
    """Percentile scaling: how far the bulk of the image reaches below the 99.9th percentile at
    1, in network units (`bulk_level`); None for the other scalings."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Scale to float32 network units (values too far out to scale become +-inf)."""
        with np.errstate(over="ignore"):
            values = (np.asarray(x, dtype=np.float64) - self.offset) / self.scale
            return self._undone(values.astype(np.float32))

    def _undone(self, values: np.ndarray) -> np.ndarray:
        return values if self.curve is None else self.curve.undo(values)

    def clip_bounds(self) -> tuple[float, float] | None:
        """Where an integer image's values were clipped (its dtype's ends) in network units;
        None for floats, which carry no such ends."""
        if not np.issubdtype(self.dtype, np.integer):
            return None
        info = np.iinfo(self.dtype)
        ends = (np.array([info.min, info.max], dtype=np.float64) - self.offset) / self.scale
        low, high = self._undone(ends)
        return float(low), float(high)

    def inverse(self, y: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """Back to the source's scale in `dtype` (None: the source dtype): rounded and clipped
        to an integer dtype, clipped to an integer source's range in a float one, exact for
        float sources."""
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        with np.errstate(over="ignore"):
            values = np.asarray(y, dtype=np.float64) * self.scale + self.offset
        if np.issubdtype(self.dtype, np.integer):
            info = np.iinfo(self.dtype)
            high = float(info.max)
            if int(high) > info.max:  # 64-bit: the float rounds up out of range, and would wrap
                high = float(np.nextafter(high, 0.0))
            if np.issubdtype(dtype, np.integer):
                values = np.rint(values)
            return np.clip(values, info.min, high).astype(dtype)
        finfo = np.finfo(dtype)  # saturate: a restored value never becomes +-inf
        return np.clip(values, finfo.min, finfo.max).astype(dtype)


def check_dtype(dtype: np.dtype) -> np.dtype:
    """Refuse the dtypes that cannot be an intensity image."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        raise InputError("boolean images (masks) cannot be restored; convert to an intensity image")
    if np.issubdtype(dtype, np.complexfloating):
        raise InputError("complex images cannot be restored; pass the magnitude or a real part")
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise InputError(f"images of dtype {dtype} cannot be restored; use integers or floats")
    return dtype


def _sample(array) -> np.ndarray:
    """Up to about `SAMPLE_SIZE` values spread over the whole array, without reading all of it.

    Axes of fewer than `MIN_SAMPLED` entries (channels, colours, short stacks) are read whole and
    the stride goes to the longer axes, shortest first: a stride on a 2- or 3-long axis would fit
    the normalisation to the first channel alone.
    """
    shape = [int(n) for n in array.shape]
    size = int(np.prod(shape))
    if size <= SAMPLE_SIZE:
        return np.asarray(array).ravel()
    steps = [1] * len(shape)
    reduction = size / SAMPLE_SIZE
    shortest_first = sorted(range(len(shape)), key=lambda axis: shape[axis])
    for left, axis in zip(range(len(shape), 0, -1), shortest_first, strict=True):
        step = int(np.ceil(reduction ** (1 / left)))
        if shape[axis] >= MIN_SAMPLED:
            steps[axis] = max(1, min(step, shape[axis] // 2))
        reduction /= shape[axis] / -(-shape[axis] // steps[axis])
    return np.asarray(array[tuple(slice(None, None, step) for step in steps)]).ravel()


SCALINGS: tuple[str, ...] = ("auto", "percentile", "range")
"""How intensities map to the network's [0, 1]: see `fit_normalization`."""


def check_scaling(scaling: str) -> str:
    """`scaling` if it is one of SCALINGS, else a clear error."""
    if scaling not in SCALINGS:
        raise InputError(f"unknown intensity scaling {scaling!r}; choose one of {SCALINGS}")
    return scaling


def fit_normalization(array, scaling: str = "auto") -> Normalization:
    """The map of `array`'s intensities to the network's range.

    - ``"percentile"``: robust percentiles (0.1 and 99.9) of (a sample of) the data go to 0 and 1,
      so a dim fluorescence image or a 12-bit camera in uint16 is seen at full contrast and the
      exposure is never "corrected": the inverse puts the result back on the input's scale, and
      the Restorer takes off any local brightening (`allinone.infer.tone`).
    - ``"range"``: integers by their dtype's full range (uint8 / 255, uint16 / 65535), floats as
      they are; a dark image stays dark for the network, which may brighten it (low light). The
      Restorer first undoes the darkening its exposure estimator reads in an 8-bit colour photo
      (`allinone.infer.auto_exposure`).
    - ``"auto"``: ``"percentile"`` here. Letting a blind model correct exposure by default made
      it brighten the dark parts of plain noisy photos (its low-light correction firing locally:
      σ 25 astronaut 20.9 dB in, 20.0 out with ``"range"``, 24.0 with ``"percentile"``). The
      Restorer resolves ``"auto"`` before calling this: an 8-bit colour photo that its exposure
      estimator reads as under-exposed gets a normalisation that undoes the darkening
      (`allinone.infer.auto_exposure`).
    """
    dtype = check_dtype(array.dtype)
    scaling = check_scaling(scaling)
    if scaling == "range":
        return _range_normalization(dtype)
    return _percentile_normalization(array, dtype)


def _range_normalization(dtype: np.dtype) -> Normalization:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return Normalization(float(info.min), float(info.max) - float(info.min), dtype)
    return Normalization(0.0, 1.0, dtype)


def _percentile_normalization(array, dtype: np.dtype) -> Normalization:
    values = _sample(array)
    if np.issubdtype(dtype, np.floating):
        values = values[np.isfinite(values)].astype(np.float64)
    if values.size == 0:
        return Normalization(0.0, 1.0, dtype, keep_exposure=True)
    with np.errstate(over="ignore", invalid="ignore"):
        low, bulk, high = np.percentile(values, [LOW_PERCENTILE, BULK_PERCENTILE, HIGH_PERCENTILE])
        scale = float(high - low)
    if not (np.isfinite(low) and np.isfinite(high) and np.isfinite(scale)):
        raise InputError(
            f"the image's values span {values.min():.3g} to {values.max():.3g}, too wide a "
            "range to compute with; divide the image by a constant first"
        )
    if scale <= 0:
        scale = max(1.0, abs(float(low)))
    level = bulk_level(values, float(low), scale, float(bulk))
    return Normalization(float(low), scale, dtype, keep_exposure=True, bulk=level)


def bulk_level(values: np.ndarray, low: float, scale: float, percentile: float) -> float:
    """How bright the bulk of `values` reaches in network units (`x -> (x - low) / scale`):
    their `BULK_PERCENTILE` (`percentile`), or, where that reaches `DIM_LEVEL` (bright objects
    over 5 % of the plane), the same percentile of the values below it: how bright the structure
    around those objects is."""
    bulk = (percentile - low) / scale
    if bulk < DIM_LEVEL:
        return bulk
    dim = values[values < low + DIM_LEVEL * scale]
    if dim.size == 0:
        return bulk
    return float((np.percentile(dim, BULK_PERCENTILE) - low) / scale)
