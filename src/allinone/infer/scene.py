"""Scene-scale haze: judged on a small overview of a plane, removed at that scale before tiling.

The network learnt haze from 64-pixel patches. Over a 64-pixel window of a full-size photo, haze
looks like a flat, soft region, so tile by tile it reads as blur and stays (SOTS-indoor at full
size: p(haze) 0.1-0.4). On an overview whose long side is `SIDE` pixels, a window spans a good
part of the scene and the same network sees and removes the haze.

So each plane larger than the overview is first shrunk to it (block means, streamed row chunk by
row chunk), the network restores the overview, and a guided-filter fit turns the change into a
smooth per-pixel gain and offset (`fit_tone`): where the overview's restoration is locally an
affine map of its input, that map is carried to the full-size input, weighted by how sure the
overview is of haze (`haze_weight`). Gains drift to 1 where the overview is flat, so texture the
overview cannot see is never amplified. The tiles then see a dehazed input and do the local work
(noise, blur...).

Only colour planes get this (the Restorer's choice). On grey images a low-contrast texture and
haze look alike: clean skimage `text` lost 8.3 dB and `gravel` 4.4 dB to a "dehazing" overview.

An 8-bit overview keeps the black level: intensities are divided by the plane's high percentile
but not shifted by its low one. A percentile stretch removes the veil haze lays over a photo, and
with it what the network needs to see the haze. Other dtypes (microscopy, scientific cameras)
are seen as the tiles see them, stretched: their zero is rarely black (a camera offset of 500
counts would read as a thick veil, and removing it cost 26 dB on FMD fields given such an offset).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from allinone.infer.normalize import Normalization
from allinone.types import DEGRADATIONS

SIDE = 128
"""Long side in pixels of the overview: twice the training patch."""
RADIUS = 2
"""Radius in overview pixels of the guided-filter windows."""
EPS = 1e-3
"""Guided-filter regulariser: a window whose variance is below this keeps gain 1."""

HAZE = DEGRADATIONS.index("haze")


@dataclass(frozen=True)
class SceneTone:
    """A smooth per-pixel gain and offset for a plane's network input, stored at overview size."""

    gain: np.ndarray
    """(3, h, w) float32."""
    offset: np.ndarray
    """(3, h, w) float32, in network units."""
    factor: int
    """Plane pixels per overview pixel, along both axes."""

    def apply(self, values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """`values` (len(rows), len(cols), 3) at plane `rows` and `cols`, gain and offset
        interpolated bilinearly from the overview."""
        gain = self._at(self.gain, rows, cols)
        offset = self._at(self.offset, rows, cols)
        return (values * gain + offset).astype(np.float32)

    def _at(self, field: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        along_y = _interpolate(field, rows, self.factor, axis=1)
        return np.moveaxis(_interpolate(along_y, cols, self.factor, axis=2), 0, 2)


def _interpolate(field: np.ndarray, positions: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Linear interpolation of `field` along `axis` at plane `positions` (block centres at
    (i + 0.5) * factor - 0.5), clamped at the ends."""
    size = field.shape[axis]
    u = np.clip((positions + 0.5) / factor - 0.5, 0, size - 1)
    below = np.floor(u).astype(np.int64)
    above = np.minimum(below + 1, size - 1)
    shape = [1, 1, 1]
    shape[axis] = len(positions)
    t = (u - below).reshape(shape).astype(np.float32)
    return np.take(field, below, axis=axis) * (1 - t) + np.take(field, above, axis=axis) * t


def overview(chunks: Iterable[np.ndarray], width: int, factor: int) -> np.ndarray:
    """(ceil(H / factor), ceil(W / factor), C) block means of a plane given as (rows, W, C)
    chunks of whole rows, top to bottom; partial blocks at the edges average what they hold."""
    starts = np.arange(0, width, factor)
    columns = np.diff(np.append(starts, width)).astype(np.float64)
    sums: list[np.ndarray] = []
    counts: list[int] = []
    filled = 0
    for chunk in chunks:
        rows = np.add.reduceat(chunk, starts, axis=1) / columns[:, None]
        for row in rows:
            if filled % factor == 0:
                sums.append(np.zeros(row.shape))
                counts.append(0)
            sums[-1] += row
            counts[-1] += 1
            filled += 1
    return (np.stack(sums) / np.array(counts)[:, None, None]).astype(np.float32)


def _box(x: torch.Tensor, radius: int) -> torch.Tensor:
    padded = F.pad(x, (radius,) * 4, mode="replicate")
    return F.avg_pool2d(padded, 2 * radius + 1, stride=1)


def fit_tone(
    source: torch.Tensor, target: torch.Tensor, radius: int = RADIUS, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain and offset, (B, C, H, W) each, of the local affine maps from `source` to `target`.

    A guided filter per channel whose regulariser pulls the gain towards 1 (not 0, as in He et
    al.): flat windows keep the source as it is, plus the change of their mean.
    """
    mean_s, mean_t = _box(source, radius), _box(target, radius)
    covariance = _box(source * target, radius) - mean_s * mean_t
    variance = _box(source * source, radius) - mean_s * mean_s
    gain = (covariance + eps) / (variance + eps)
    offset = mean_t - gain * mean_s
    return _box(gain, radius), _box(offset, radius)


def overview_units(norm: Normalization) -> tuple[float, float]:
    """(unit, shift) such that the overview holds network units * unit + shift: for 8-bit data,
    intensities over the high percentile (black level kept); else network units as they are."""
    high = norm.offset + norm.scale
    if np.dtype(norm.dtype) != np.uint8 or high <= 0:
        return 1.0, 0.0
    return norm.scale / high, norm.offset / high


@dataclass(frozen=True)
class Overview:
    """A plane shrunk to the overview, and the way back to network units."""

    image: torch.Tensor
    """(1, 3, h, w) float32: network units * `unit` + `shift`."""
    factor: int
    unit: float
    shift: float


def has_overview(shape: tuple[int, int]) -> bool:
    """Whether a plane of `shape` is larger than the overview, so gets one."""
    return max(shape) > SIDE


def plane_overview(
    chunks: Iterable[np.ndarray], shape: tuple[int, int], norm: Normalization
) -> Overview | None:
    """The overview of one colour plane of `shape` given as normalised (rows, W, 3) `chunks`;
    None for planes no larger than the overview."""
    if not has_overview(shape):
        return None
    height, width = shape
    factor = -(-max(height, width) // SIDE)
    low = overview(chunks, width, factor)
    unit, shift = overview_units(norm)
    image = torch.from_numpy(low * unit + shift).permute(2, 0, 1)[None]
    return Overview(image, factor, unit, shift)


def haze_weight(logit: torch.Tensor) -> torch.Tensor:
    """How much of the overview's change to apply: none unless haze is more likely than not, then
    rising linearly to all of it at p = 0.75 (4 (p - 0.5)). With p itself as the weight, the
    overview's restoration of clean textures came through (skimage `rocket`, colour: -0.4 dB at
    p 0.13). The slope was chosen on 11 skimage colour photos under `evaluate.add_scene_haze`
    (input 9.84 dB): 14.38 dB with slope 2 (2 p - 1), 14.86 with 4, and none of the same photos
    clean changed."""
    return (4 * (torch.sigmoid(logit) - 0.5)).clamp(0, 1)


NetworkPass = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""(B, 3, h, w) input → (restored, tile-level composition logits (B, T)): the network run once,
on tiles or on an overview."""


def scene_tone(
    network: NetworkPass, chunks: Iterable[np.ndarray], shape: tuple[int, int], norm: Normalization
) -> SceneTone | None:
    """The haze correction of one plane (see `plane_overview` for the arguments); None where the
    plane has no overview."""
    view = plane_overview(chunks, shape, norm)
    return None if view is None else overview_tone(network, view)


def overview_tone(network: NetworkPass, view: Overview) -> SceneTone:
    """The haze correction that `network`'s restoration of a plane's overview `view` gives."""
    restored, logits = network(view.image)
    weight = haze_weight(logits[0, HAZE].double())
    gain, offset = fit_tone(view.image.double(), restored.double())
    gain = 1 + weight * (gain - 1)
    offset = weight * offset
    # back to network units (the overview holds x * unit + shift)
    offset = (offset + (gain - 1) * view.shift) / view.unit
    return SceneTone(gain[0].float().numpy(), offset[0].float().numpy(), view.factor)
