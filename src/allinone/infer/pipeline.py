"""The tile loop shared by restore and analyze: planes → bands of tiles → batches → blended rows.

Memory depends on the tile size, not on the image size. A plane is read one band at a time (the
rows one row of tiles needs, context included), each tile is normalised on its own, outputs are
blended into accumulators one tile high, and rows are handed on as soon as no later tile touches
them. What a tile's restoration needs of its whole plane (the noise level, the scene-scale
correction) is read in row chunks before the plane's first tile. Tiles of consecutive bands and
planes share batches, so small planes (a stack of slices) still fill the device. The results are
those of normalising and blending whole planes.

When a CUDA device runs out of memory, the batch is retried with half as many tiles; when a single
tile does not fit, the plane is started again with smaller tiles; when the smallest tiles do not
fit either, the job goes on on the CPU, with an `AllInOneWarning`.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import warnings
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from allinone.errors import AllInOneWarning, Cancelled
from allinone.infer.axes import PlaneLayout
from allinone.infer.clipping import MAD_TO_SIGMA, block_details
from allinone.infer.normalize import Normalization
from allinone.infer.scene import SceneTone
from allinone.infer.tiling import Tile, TileGrid, reflect_indices, round_up
from allinone.jobs import Cancel, Progress, is_cancelled

logger = logging.getLogger(__name__)

CHUNK_VALUES = 2**19
"""Rows are read (statistics) and handed on (results) in chunks of about this many values."""
MIN_CORE = 128
"""Out-of-memory retries do not shrink tile cores below this many pixels."""

Forward = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
"""(B, 3, h, w) tile inputs and the (B, 1, 1, 1) noise levels of their planes (None where the
source reads none) → (B, channels, h/scale, w/scale) outputs."""


# --- reading and normalising ----------------------------------------------------------------------


SceneHook = Callable[["PlaneSource", tuple[int, ...], object], SceneTone | None]
"""(source, plane index, fill value) → the plane's scene-scale correction, or None."""


class PlaneSource:
    """Windows of rows of an N-D array's planes, and their network inputs.

    `scene`, when given, computes a correction per plane (`allinone.infer.scene`) that every
    tile's network input of that plane gets; with `noise`, each plane's noise level is read
    (`noise_level`) and handed to the forward with its tiles."""

    def __init__(
        self,
        layout: PlaneLayout,
        array,
        norm: Normalization,
        scene: SceneHook | None = None,
        noise: bool = False,
    ) -> None:
        self.layout = layout
        self.array = array
        self.norm = norm
        self.scene = scene
        self.noise = noise

    def rows(self, index: tuple[int, ...], start: int, stop: int) -> np.ndarray:
        """Rows `start:stop` of plane `index`, (rows, W) or (rows, W, 3|4), in the source dtype."""
        return self.layout.get(self.array, index, rows=slice(start, stop))

    def _spans(self) -> Iterator[tuple[int, int]]:
        height, width = self.layout.plane_shape
        step = CHUNK_VALUES // (width * (self.layout.shape[-1] if self.layout.rgb else 1))
        step = max(2, step // 2 * 2)  # even, so that 2 x 2 blocks do not straddle chunks
        for start in range(0, height, step):
            yield start, min(start + step, height)

    def chunks(self, index: tuple[int, ...]) -> Iterator[np.ndarray]:
        """Plane `index` in normalised chunks of whole rows."""
        for start, stop in self._spans():
            yield self.norm.forward(self.rows(index, start, stop))

    def input_chunks(self, index: tuple[int, ...], fill) -> Iterator[np.ndarray]:
        """Plane `index` normalised, non-finite values filled, alpha dropped, in chunks of whole
        rows: (rows, W) grey, (rows, W, 3) colour."""
        for start, stop in self._spans():
            yield self._channels(self._filled(self.rows(index, start, stop), fill))

    def scene_tone(self, index: tuple[int, ...], fill) -> SceneTone | None:
        """Plane `index`'s scene-scale correction; None without a `scene` hook."""
        return None if self.scene is None else self.scene(self, index, fill)

    def noise_level(
        self, index: tuple[int, ...], fill, tone: SceneTone | None = None
    ) -> float | None:
        """The standard deviation of the noise in plane `index`'s network input (`tone`
        applied), in network units: `allinone.infer.clipping.noise_sigma` over the whole plane
        rather than a tile (the median of its blocks' details, in bounded memory), so that every
        tile allows alike for noise clipped at the dtype's ends. None without `noise`, or for
        floats, which nothing clipped."""
        bounds = self.norm.clip_bounds()
        if not self.noise or bounds is None:
            return None
        width = self.layout.plane_shape[1]

        def details() -> Iterator[np.ndarray]:
            for start, stop in self._spans():
                values = self._channels(self._filled(self.rows(index, start, stop), fill))
                if tone is not None:
                    values = tone.apply(values, np.arange(start, stop), np.arange(width))
                yield block_details(values, bounds)

        median = finite_median(details)
        return float(median / MAD_TO_SIGMA) if np.isfinite(median) else 0.0

    def fill_value(self, index: tuple[int, ...]) -> np.float32 | float | None:
        """The median that replaces the plane's non-finite values; None when there are none."""
        if not np.issubdtype(self.norm.dtype, np.floating):
            return None
        if all(np.isfinite(chunk).all() for chunk in self.chunks(index)):
            return None
        median = finite_median(lambda: self.chunks(index))
        return median if np.isfinite(median) else 0.0  # 0 when no value is finite

    def _filled(self, pixels: np.ndarray, fill) -> np.ndarray:
        values = self.norm.forward(pixels)
        if fill is None:
            return values
        return np.where(np.isfinite(values), values, fill).astype(np.float32)

    @staticmethod
    def _channels(values: np.ndarray) -> np.ndarray:
        return values if values.ndim == 2 else values[:, :, :3]

    def network_input(self, pixels: np.ndarray, fill) -> np.ndarray:
        """(h, w, 3) float32 network input of source pixels (grey repeated, alpha dropped)."""
        values = self._channels(self._filled(pixels, fill))
        if values.ndim == 2:
            return np.repeat(values[:, :, None], 3, axis=2)
        return values


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort as the float32 `values` do."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))


def _from_key(key: int) -> np.float32:
    bits = key & 0x7FFFFFFF if key >> 31 else ~key & 0xFFFFFFFF
    return np.array([bits], dtype=np.uint32).view(np.float32)[0]


def finite_median(chunks: Callable[[], Iterable[np.ndarray]]) -> np.float32:
    """`np.nanmedian` of the finite values of float32 `chunks`, in bounded memory.

    Two passes of 16-bit radix selection over the chunks (`chunks()` is called once a pass) find
    the middle values exactly; NaN when no value is finite.
    """
    high = np.zeros(2**16, dtype=np.int64)
    for chunk in chunks():
        keys = _sort_keys(chunk[np.isfinite(chunk)])
        high += np.bincount(keys >> 16, minlength=2**16)
    count = int(high.sum())
    if count == 0:
        return np.float32(np.nan)
    ranks = [(count - 1) // 2, count // 2]
    below = np.cumsum(high) - high
    bins = [int(np.searchsorted(np.cumsum(high), rank, side="right")) for rank in ranks]
    low = {b: np.zeros(2**16, dtype=np.int64) for b in set(bins)}
    for chunk in chunks():
        keys = _sort_keys(chunk[np.isfinite(chunk)])
        for b, histogram in low.items():
            histogram += np.bincount(keys[keys >> 16 == b] & 0xFFFF, minlength=2**16)
    middle = []
    for rank, b in zip(ranks, bins, strict=True):
        within = int(np.searchsorted(np.cumsum(low[b]), rank - below[b], side="right"))
        middle.append(_from_key((b << 16) | within))
    values = np.array(middle if count % 2 == 0 else middle[:1], dtype=np.float32)
    return np.median(values)


# --- tiles in bands ----------------------------------------------------------------------------


@dataclass
class Blend:
    """Weighted sums of tile outputs for the rows of a plane that tiles may still touch."""

    top: int
    values: np.ndarray
    weights: np.ndarray

    @classmethod
    def empty(cls, rows: int, width: int, channels: int) -> Blend:
        values = np.zeros((rows, width, channels), dtype=np.float32)
        return cls(0, values, np.zeros((rows, width), dtype=np.float32))

    def add(self, output: np.ndarray, weight: np.ndarray, y: int, x: int) -> None:
        """Add an (h, w, C) output core with its (h, w) weights at row `y`, column `x`."""
        ys = slice(y - self.top, y - self.top + output.shape[0])
        xs = slice(x, x + output.shape[1])
        self.values[ys, xs] += output * weight[:, :, None]
        self.weights[ys, xs] += weight

    def take(self, stop: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, blended rows) for rows `top:stop`, in chunks; then drop those rows."""
        count = stop - self.top
        for start in range(0, count, chunk):
            end = min(start + chunk, count)
            weights = np.maximum(self.weights[start:end], 1e-8)
            yield self.top + start, self.values[start:end] / weights[:, :, None]
        kept = len(self.weights) - count
        if kept > 0:
            self.values[:kept] = self.values[count:]
            self.weights[:kept] = self.weights[count:]
        self.values[max(kept, 0) :] = 0
        self.weights[max(kept, 0) :] = 0
        self.top = stop


@dataclass
class PlaneRun:
    """One plane in flight."""

    position: int
    index: tuple[int, ...]
    fill: np.float32 | float | None
    blend: Blend
    noise: float | None = None
    """The plane's noise level (`PlaneSource.noise_level`)."""


@dataclass
class Band:
    """A row of tiles: the source rows it read, and the blended rows it finishes."""

    top: int
    window: np.ndarray
    stop: int
    """Output rows above this one are final once the band's last tile is blended."""


@dataclass
class Rows:
    """Finished rows of a plane: blended network outputs and the source rows they restore."""

    plane: PlaneRun
    start: int
    """First row, in output units (source rows divided by the grid's output scale)."""
    blended: np.ndarray
    """(rows, padded width / scale, channels) float32."""
    band: Band

    def source(self) -> np.ndarray:
        """The source rows of `blended` (for an output scale of 1)."""
        top = self.start - self.band.top
        return self.band.window[top : top + len(self.blended)]


@dataclass
class TileWork:
    """One tile's network input, and where its output goes."""

    plane: PlaneRun
    tile: Tile
    input: np.ndarray
    band: Band | None
    """Set on the last tile of a band."""


def band_rows(grid: TileGrid, y: int) -> tuple[int, int]:
    """The source rows the tiles at row `y` read (core, context and reflections)."""
    rows = reflect_indices(y - grid.context, y + grid.core_h + grid.context, grid.height)
    return int(rows.min()), int(rows.max()) + 1


def tile_work(
    source: PlaneSource,
    grid: TileGrid,
    planes: list[tuple[int, ...]],
    first: int,
    channels: int,
    scale: int,
) -> Iterator[TileWork]:
    """The tiles of planes `first:`, band by band, with their normalised inputs."""
    rows = [(y, list(tiles)) for y, tiles in itertools.groupby(grid.tiles(), lambda t: t.y)]
    ph, pw = grid.padded
    for position in range(first, len(planes)):
        index = planes[position]
        blend = Blend.empty(grid.core_h // scale, pw // scale, channels)
        fill = source.fill_value(index)
        tone = source.scene_tone(index, fill)
        plane = PlaneRun(position, index, fill, blend, source.noise_level(index, fill, tone))
        for n, (y, tiles) in enumerate(rows):
            top, bottom = band_rows(grid, y)
            stop = rows[n + 1][0] if n + 1 < len(rows) else ph
            band = Band(top, source.rows(index, top, bottom), stop // scale)
            for k, tile in enumerate(tiles):
                pixels = grid.read(band.window, tile, top)
                work = source.network_input(pixels, plane.fill)
                if tone is not None:
                    work = tone.apply(work, *grid.indices(tile))
                yield TileWork(plane, tile, work, band if k == len(tiles) - 1 else None)


def _batches(work: Iterator[TileWork], size: int) -> Iterator[list[TileWork]]:
    while batch := list(itertools.islice(work, size)):
        yield batch


# --- running batches ----------------------------------------------------------------------------


def to_tensor(inputs: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Stack (H, W, 3) tiles into a (B, 3, H, W) float tensor on `device`."""
    host = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def noise_tensor(levels: list[float | None], device: torch.device) -> torch.Tensor | None:
    """The tiles' noise levels as a (B, 1, 1, 1) float tensor on `device`; None if one has none."""
    if any(level is None for level in levels):
        return None
    return torch.tensor(levels, dtype=torch.float32).view(-1, 1, 1, 1).to(device)


class TileTooLarge(Exception):
    """Even one tile at a time does not fit in the device's memory."""


class Runner:
    """Runs tile inputs through `forward` in batches, halving the batch when memory runs out."""

    def __init__(self, forward: Forward, device: torch.device, batch_size: int) -> None:
        self.forward = forward
        self.device = device
        self.batch_size = batch_size

    def run(self, inputs: list[np.ndarray], noise: list[float | None]) -> list[np.ndarray]:
        """(C, h, w) float32 outputs of `inputs`, whose planes' noise levels are `noise`;
        raises `TileTooLarge`."""
        outputs: list[np.ndarray] = []
        while len(outputs) < len(inputs):
            span = slice(len(outputs), len(outputs) + self.batch_size)
            try:
                x = to_tensor(inputs[span], self.device)
                result = self.forward(x, noise_tensor(noise[span], self.device))
                outputs.extend(result.float().cpu().numpy())
            except torch.cuda.OutOfMemoryError as error:
                _free_cuda_cache()
                if self.batch_size == 1:
                    raise TileTooLarge(str(error)) from error
                self.batch_size //= 2
                logger.info("out of device memory: retrying with %d tiles a batch", self.batch_size)
        return outputs


def _free_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def smaller_grid(grid: TileGrid) -> TileGrid | None:
    """The grid with cores half as large, or None when they are already the smallest."""
    core = max(grid.core_h, grid.core_w)
    if core <= MIN_CORE:
        return None
    size = max(MIN_CORE, round_up(core // 2, grid.multiple))
    ph, pw = grid.padded
    return dataclasses.replace(grid, core_h=min(size, ph), core_w=min(size, pw))


def _blend(batch: list[TileWork], outputs: list[np.ndarray], grid: TileGrid, scale: int, on_rows):
    for work, output in zip(batch, outputs, strict=True):
        core = np.moveaxis(grid.core_of(output, scale), 0, 2)
        weight = grid.weight(work.tile)[::scale, ::scale]
        work.plane.blend.add(core, weight, work.tile.y // scale, work.tile.x // scale)
        if work.band is not None:
            blend = work.plane.blend
            chunk = max(1, CHUNK_VALUES // blend.values[0].size)
            for start, blended in blend.take(work.band.stop, chunk):
                on_rows(Rows(work.plane, start, blended, work.band))


def run_tiles(
    forward: Forward,
    source: PlaneSource,
    grid: TileGrid,
    *,
    batch_size: int,
    device: torch.device,
    channels: int,
    scale: int,
    on_rows: Callable[[Rows], None],
    cancel: Cancel = None,
    message: str = "",
    fallback: Callable[[], torch.device] | None = None,
) -> Generator[Progress, None, None]:
    """Run `forward` over every tile of every plane and blend the outputs.

    `forward` maps (B, 3, h, w) inputs and their planes' noise levels to (B, channels,
    h/scale, w/scale) outputs (`Forward`); finished rows
    go to `on_rows` (each row once, except after an out-of-memory restart of a plane with smaller
    tiles, which hands its rows on again). Progress is yielded after each batch; `cancel` is
    checked before each batch. `fallback()` moves the work to the CPU and returns that device.
    """
    runner = Runner(forward, device, batch_size)
    planes = list(source.layout.indices())
    first, done = 0, 0
    while first < len(planes):
        total = done + (len(planes) - first) * len(grid.tiles())
        work = tile_work(source, grid, planes, first, channels, scale)
        for batch in _batches(work, batch_size):
            if is_cancelled(cancel):
                raise Cancelled(f"{message or 'job'} cancelled; nothing was written")
            inputs = [item.input for item in batch]
            noise = [item.plane.noise for item in batch]
            try:
                outputs = runner.run(inputs, noise)
            except TileTooLarge:
                smaller = smaller_grid(grid)
                if smaller is not None:
                    logger.info("out of device memory: %d-pixel tiles", smaller.core_h)
                    grid, first = smaller, batch[0].plane.position
                    break
                runner.device = _fall_back(fallback, runner.device)
                outputs = runner.run(inputs, noise)
            _blend(batch, outputs, grid, scale, on_rows)
            done += len(batch)
            yield Progress(done, total, message)
        else:
            first = len(planes)


def _fall_back(fallback: Callable[[], torch.device] | None, device: torch.device) -> torch.device:
    if fallback is None or device.type == "cpu":
        raise torch.cuda.OutOfMemoryError(
            f"{device} ran out of memory even with {MIN_CORE}-pixel tiles, one at a time"
        )
    warnings.warn(
        f"{device} ran out of memory even with {MIN_CORE}-pixel tiles, one at a time: "
        "going on on the CPU, which is much slower. Free GPU memory or use another device.",
        AllInOneWarning,
        stacklevel=3,
    )
    return fallback()


def restored_rows(
    rows: Rows, norm: Normalization, rgb: bool, height: int, width: int, dtype: np.dtype
) -> np.ndarray:
    """Finished rows in `dtype` (`Normalization.inverse`) and the source's channels; non-finite
    input pixels are kept as they were, and so is an alpha channel. `height` and `width` are the
    plane's (unpadded) size."""
    count = min(len(rows.blended), height - rows.start)
    result = rows.blended[:count, :width]
    restored = norm.inverse(result if rgb else result.mean(axis=2), dtype)
    source = rows.source()[:count]
    if rgb and source.shape[2] == 4:
        restored = np.concatenate([restored, source[:, :, 3:]], axis=2)
    if rows.plane.fill is not None:
        restored = np.where(np.isfinite(norm.forward(source)), restored, source)
    return restored
