"""The tile loop shared by restore and analyze: planes → tiles → batches → blended planes.

Tiles of consecutive planes share batches, so small planes (a stack of slices) still fill the
device; at most one batch of planes is held in memory besides the output.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from allinone.errors import Cancelled
from allinone.infer.axes import PlaneLayout
from allinone.infer.normalize import Normalization
from allinone.infer.tiling import Tile, TileGrid


@dataclass
class Progress:
    """How far a job is: `done` of `total` units (tiles, or steps when fine-tuning)."""

    done: int
    total: int
    message: str = ""
    metrics: dict[str, float] | None = None


def is_cancelled(cancel) -> bool:
    """True when `cancel` (a callable, an Event-like object, or None) asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


@dataclass
class PlaneJob:
    """One plane in flight: its input, normalisation and blending accumulators."""

    index: tuple[int, ...]
    image: np.ndarray
    extra: np.ndarray | None
    finite: np.ndarray | None
    accumulator: np.ndarray = field(init=False)
    weights: np.ndarray = field(init=False)


def prepare_plane(plane: np.ndarray, norm: Normalization) -> PlaneJob:
    """Normalise a plane to (H, W, 3) float32; keep alpha and non-finite pixels aside."""
    values = norm.forward(plane)
    finite = None
    if not np.all(np.isfinite(values)):
        finite = np.isfinite(values)
        values = np.where(finite, values, np.nanmedian(np.where(finite, values, np.nan)) or 0.0)
        values = values.astype(np.float32)
    extra = None
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    elif values.shape[2] == 4:
        extra = plane[:, :, 3:]
        values = values[:, :, :3]
    return PlaneJob((), values, extra, finite)


def finish_plane(job: PlaneJob, blended: np.ndarray, norm: Normalization, grey: bool, source):
    """Back to the source dtype and channels; non-finite input pixels are kept as they were."""
    h, w = source.shape[:2]
    result = blended[:h, :w]
    result = result.mean(axis=2) if grey else result
    restored = norm.inverse(result)
    if job.extra is not None:
        restored = np.concatenate([restored, job.extra], axis=2)
    if job.finite is not None:
        restored = np.where(job.finite, restored, source)
    return restored


def iterate_batches(
    layout: PlaneLayout,
    array,
    norm: Normalization,
    grid: TileGrid,
    batch_size: int,
    channels: int,
    scale: int,
) -> Iterator[list[tuple[PlaneJob, np.ndarray, Tile, bool]]]:
    """Batches of (plane job, source plane, tile, last tile of its plane) across planes."""
    tiles = grid.tiles()
    ph, pw = grid.padded
    batch: list = []
    for index in layout.indices():
        source = layout.get(array, index)
        job = prepare_plane(source, norm)
        job.index = index
        job.accumulator = np.zeros((ph // scale, pw // scale, channels), dtype=np.float32)
        job.weights = np.zeros((ph // scale, pw // scale), dtype=np.float32)
        for n, tile in enumerate(tiles):
            batch.append((job, source, tile, n == len(tiles) - 1))
            if len(batch) == batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def to_tensor(inputs: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """Stack (H, W, 3) tiles into a (B, 3, H, W) float tensor on `device`."""
    host = torch.from_numpy(np.stack(inputs)).permute(0, 3, 1, 2)
    if device.type == "cuda":
        host = host.pin_memory()
    return host.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


PlaneDone = Callable[[PlaneJob, np.ndarray, np.ndarray], None]


def run_tiles(
    forward: Callable[[torch.Tensor], torch.Tensor],
    layout: PlaneLayout,
    array,
    norm: Normalization,
    grid: TileGrid,
    *,
    batch_size: int,
    device: torch.device,
    channels: int,
    scale: int,
    on_plane: PlaneDone,
    cancel=None,
    message: str = "",
) -> Generator[Progress, None, None]:
    """Run `forward` over every tile of every plane and blend the outputs.

    `forward` maps (B, 3, h, w) inputs to (B, channels, h/scale, w/scale) outputs; each finished
    plane's blended (H/scale, W/scale, channels) result goes to `on_plane(job, source, blended)`.
    Progress is yielded after each batch; `cancel` is checked before each batch.
    """
    total = layout.num_planes * len(grid.tiles())
    done = 0
    for batch in iterate_batches(layout, array, norm, grid, batch_size, channels, scale):
        if is_cancelled(cancel):
            raise Cancelled(f"{message or 'job'} cancelled; nothing was written")
        inputs = [grid.read(job.image, tile) for job, _, tile, _ in batch]
        outputs = forward(to_tensor(inputs, device)).float().cpu().numpy()
        for (job, source, tile, last), output in zip(batch, outputs, strict=True):
            core = np.moveaxis(grid.core_of(output, scale), 0, 2)
            weight = grid.weight(tile)[::scale, ::scale]
            y, x = tile.y // scale, tile.x // scale
            ys, xs = slice(y, y + core.shape[0]), slice(x, x + core.shape[1])
            job.accumulator[ys, xs] += core * weight[:, :, None]
            job.weights[ys, xs] += weight
            if last:
                blended = job.accumulator / np.maximum(job.weights, 1e-8)[:, :, None]
                on_plane(job, source, blended)
        done += len(batch)
        yield Progress(done, total, message)
