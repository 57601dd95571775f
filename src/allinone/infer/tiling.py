"""Tile grids with context margins and smooth blending.

A plane is padded (by reflection) to the network's multiple and cut into cores of `tile` pixels
whose starts are multiples of that multiple, so every tile sees the same downsampling grid as the
whole image. Each tile also reads `context` pixels around its core (reflected at the image border,
as the whole-image pass is), at least the network's reach, so its core is computed as in a
whole-image pass; neighbouring cores overlap by `blend` pixels and are mixed with linear ramps,
which hides what little difference is left. Every tile of a grid has the same input size, so
tiles batch together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def round_up(value: int, multiple: int) -> int:
    return -(-int(value) // multiple) * multiple


def reflect_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices `start..stop-1` folded into `[0, size)` by mirror reflection (edge not repeated)."""
    index = np.arange(start, stop)
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    index = np.mod(index, period)
    return np.where(index >= size, period - index, index)


def _starts(length: int, core: int, step: int) -> list[int]:
    starts = list(range(0, max(length - core, 0) + 1, step))
    if starts[-1] + core < length:
        starts.append(length - core)
    return starts


def _ramp(length: int, blend: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    position = np.arange(length, dtype=np.float32) + 0.5
    weight = np.ones(length, dtype=np.float32)
    if blend > 0 and ramp_start:
        weight = np.minimum(weight, position / blend)
    if blend > 0 and ramp_end:
        weight = np.minimum(weight, (length - position) / blend)
    return weight


def _balanced_core(length: int, largest: int, blend: int, multiple: int) -> int:
    """The smallest core, at most `largest`, that covers `length` with as few cores as `largest`
    does (neighbours overlapping by `blend`): equal cores rather than full ones plus a sliver.
    E.g. 1000 pixels in cores of at most 520 overlapping by 8: two of 504, not of 520."""
    if largest >= length:
        return length
    count = -(-(length - blend) // max(largest - blend, 1))
    return min(largest, round_up(-(-(length + (count - 1) * blend) // count), multiple))


@dataclass(frozen=True)
class Tile:
    """A core at (y, x) of the padded plane, of the grid's core size."""

    y: int
    x: int


@dataclass(frozen=True)
class TileGrid:
    """The tiles of one plane size; see the module docstring."""

    height: int
    width: int
    core_h: int
    core_w: int
    context: int
    blend: int
    multiple: int

    @classmethod
    def plan(
        cls, height: int, width: int, tile: int, overlap: int, multiple: int = 8, reach: int = 0
    ) -> TileGrid:
        """Grid for a `height` x `width` plane; `tile <= 0` means one tile for the whole plane.

        Each tile's own share of the plane is at most `tile` (rounded up to `multiple`); its core
        adds the `blend` band it shares with a neighbour, and its input the `context` margins:
        `overlap`, or the network's `reach` where that is larger. So a 1024 plane with
        `tile=512` takes 2 x 2 tiles, whose cores are as equal as possible.
        """
        padded_h, padded_w = round_up(height, multiple), round_up(width, multiple)
        context = round_up(max(overlap, reach, 0), multiple)
        blend = round_up(max(overlap // 4, 1), multiple) if overlap > 0 else 0
        if tile <= 0:
            core_h, core_w = padded_h, padded_w
        else:
            core = max(round_up(tile, multiple), 2 * multiple) + blend
            core_h = _balanced_core(padded_h, core, blend, multiple)
            core_w = _balanced_core(padded_w, core, blend, multiple)
        return cls(height, width, core_h, core_w, context, blend, multiple)

    @property
    def padded(self) -> tuple[int, int]:
        return round_up(self.height, self.multiple), round_up(self.width, self.multiple)

    @property
    def input_shape(self) -> tuple[int, int]:
        """Height and width of every tile's input (core plus context)."""
        return self.core_h + 2 * self.context, self.core_w + 2 * self.context

    def _step(self, core: int) -> int:
        return max(self.multiple, core - self.blend)

    def tiles(self) -> list[Tile]:
        """All tiles, row by row."""
        ph, pw = self.padded
        ys = _starts(ph, self.core_h, self._step(self.core_h))
        xs = _starts(pw, self.core_w, self._step(self.core_w))
        return [Tile(y, x) for y in ys for x in xs]

    def indices(self, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
        """The plane rows and columns of the tile's input (core plus context), reflected at
        borders."""
        rows = reflect_indices(
            tile.y - self.context, tile.y + self.core_h + self.context, self.height
        )
        cols = reflect_indices(
            tile.x - self.context, tile.x + self.core_w + self.context, self.width
        )
        return rows, cols

    def read(self, plane: np.ndarray, tile: Tile, top: int = 0) -> np.ndarray:
        """The tile's input (core plus context) from an (H, W, ...) plane, reflected at borders.

        `plane` may hold only the plane's rows from `top` on, as long as it has those read.
        """
        rows, cols = self.indices(tile)
        return plane[rows[:, None] - top, cols[None, :]]

    def weight(self, tile: Tile) -> np.ndarray:
        """(core_h, core_w) blending weights: ramps where a neighbouring core overlaps."""
        ph, pw = self.padded
        wy = _ramp(self.core_h, self.blend, tile.y > 0, tile.y + self.core_h < ph)
        wx = _ramp(self.core_w, self.blend, tile.x > 0, tile.x + self.core_w < pw)
        return wy[:, None] * wx[None, :]

    def core_of(self, output: np.ndarray, scale: int = 1) -> np.ndarray:
        """Crop a tile's output at 1/`scale` of its resolution, (..., h, w) centred on the core
        (the tile's whole input, or less of its context), to the core."""
        h, w = self.core_h // scale, self.core_w // scale
        top, left = (output.shape[-2] - h) // 2, (output.shape[-1] - w) // 2
        return output[..., top : top + h, left : left + w]
