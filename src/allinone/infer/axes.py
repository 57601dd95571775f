"""Axes strings: guess or check them, and walk the 2-D planes (or RGB triplets) of an array."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from allinone.errors import InputError

KNOWN_AXES = "TCZYX"
MAX_AXES = len(KNOWN_AXES)


def guess_axes(shape: tuple[int, ...], rgb: bool | None = None) -> str:
    """A likely axes string for an array of this shape.

    The last axis is colour (`C`, an RGB or RGBA triplet) when `rgb` is True, or when `rgb` is
    None and it has 3 or 4 entries on an array of 3 or more dimensions; leading axes are read as
    Z, TZ or TCZ.
    """
    ndim = len(shape)
    if ndim < 2:
        raise InputError(f"an image needs at least 2 dimensions, got shape {tuple(shape)}")
    if rgb is None:
        rgb = ndim >= 3 and shape[-1] in (3, 4)
    tail = "YXC" if rgb else "YX"
    lead = ndim - len(tail)
    if lead < 0:
        raise InputError(f"shape {tuple(shape)} is too small for a colour image")
    leads = ("", "Z", "TZ") if rgb else ("", "Z", "TZ", "TCZ")
    if lead >= len(leads):
        raise _too_many_axes(ndim)
    return leads[lead] + tail


def _too_many_axes(ndim: int) -> InputError:
    return InputError(
        f"{ndim}-D arrays are not supported: at most {MAX_AXES} axes ({KNOWN_AXES}) "
        "are understood; reshape or pass a sub-array"
    )


def normalize_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Check an axes string against a shape; upper-case, with ImageJ's `S` read as `C`."""
    if len(shape) > MAX_AXES:
        raise _too_many_axes(len(shape))
    if not isinstance(axes, str) or not axes:
        raise InputError("axes must be a non-empty string such as 'YX', 'ZYX' or 'YXC'")
    axes = axes.upper().replace("S", "C")
    bad = sorted(set(axes) - set(KNOWN_AXES))
    if bad:
        raise InputError(f"unknown axis letter(s) {''.join(bad)} in {axes!r}; use {KNOWN_AXES}")
    if len(set(axes)) != len(axes):
        raise InputError(f"axes {axes!r} repeat a letter")
    if len(axes) != len(shape):
        raise InputError(
            f"axes {axes!r} have {len(axes)} letters but the image has {len(shape)} "
            f"dimensions (shape {tuple(shape)})"
        )
    if "Y" not in axes or "X" not in axes:
        raise InputError(f"axes {axes!r} must contain Y and X")
    return axes


@dataclass(frozen=True)
class PlaneLayout:
    """How an N-D array splits into 2-D planes: grey (H, W) or colour (H, W, 3|4)."""

    axes: str
    shape: tuple[int, ...]

    @classmethod
    def of(cls, shape: tuple[int, ...], axes: str | None = None, rgb: bool | None = None):
        """Layout for `shape`, with `axes` checked or guessed."""
        shape = tuple(int(n) for n in shape)
        axes = guess_axes(shape, rgb) if axes is None else normalize_axes(axes, shape)
        if shape[axes.index("Y")] == 0 or shape[axes.index("X")] == 0:
            raise InputError(f"the image is empty (shape {shape})")
        return cls(axes, shape)

    @property
    def rgb(self) -> bool:
        """Colour planes: a trailing C axis of 3 or 4 (RGB or RGBA)."""
        return self.axes.endswith("C") and self.shape[-1] in (3, 4)

    @property
    def lead_axes(self) -> tuple[int, ...]:
        """Indices of the axes that enumerate planes."""
        plane = "YXC" if self.rgb else "YX"
        return tuple(i for i, a in enumerate(self.axes) if a not in plane)

    @property
    def lead_shape(self) -> tuple[int, ...]:
        return tuple(self.shape[i] for i in self.lead_axes)

    @property
    def plane_shape(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def num_planes(self) -> int:
        return int(np.prod(self.lead_shape, dtype=np.int64))

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Plane indices (over the lead axes), in C order."""
        return np.ndindex(*self.lead_shape)

    def _selector(self, index: tuple[int, ...], rows: slice | None = None) -> tuple:
        selector: list = [slice(None)] * len(self.shape)
        for axis, i in zip(self.lead_axes, index, strict=True):
            selector[axis] = i
        if rows is not None:
            selector[self.axes.index("Y")] = rows
        return tuple(selector)

    def _plane_order(self) -> list[int]:
        kept = [a for i, a in enumerate(self.axes) if i not in self.lead_axes]
        target = "YXC" if self.rgb else "YX"
        return [kept.index(a) for a in target]

    def get(self, array, index: tuple[int, ...], rows: slice | None = None) -> np.ndarray:
        """Plane `index` as (H, W) or (H, W, 3|4), read from a NumPy, memmap, zarr or dask array.

        `rows` reads only those rows (Y) of the plane.
        """
        plane = np.asarray(array[self._selector(index, rows)])
        return np.transpose(plane, self._plane_order())

    def put(
        self, out, index: tuple[int, ...], plane: np.ndarray, rows: slice | None = None
    ) -> None:
        """Write a plane given as (H, W) or (H, W, 3|4) into `out` at `index` (or its `rows`)."""
        inverse = np.argsort(self._plane_order())
        out[self._selector(index, rows)] = np.transpose(plane, inverse)
