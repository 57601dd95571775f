"""Local brightness: where a restored image may differ from its input at large scales.

Tone: noise, blur and downsampling leave an image's local mean (a Gaussian of `TONE_SIGMA`
pixels) as it was; only haze, rain and low light change it. So `follow_local_mean` moves each
restored tile's local mean to its input's, weighted by the composition head's probability that
the tile holds none of those three (`keep_tone_weight`). A small blind model otherwise shifts
the tone of images it misreads: it "dehazed" blurred and upsampled photos, costing 1-3 dB. Where
haze is judged at scene scale (`allinone.infer.scene`), a tile's own haze reading frees nothing
(`tile_tone_changing`).

Exposure: a restored image may not be brighter, locally, than its input.

With ``scaling="percentile"`` (*keep exposure*, what ``"auto"`` uses) the promise is that an image
is restored, never brightened. Removing noise, blur, rain or background haze keeps or lowers the
local mean brightness; only correcting low light raises it. So wherever the restored tile's local
mean (a Gaussian of `SIGMA` pixels) exceeds the input's, the smooth excess is taken off: detail
restored by the network stays, a lifted background does not (the network alone lifted the dark
background of confocal fields from 4 to 14-20 grey levels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from allinone.infer.clipping import Clipping
from allinone.types import DEGRADATIONS

SIGMA = 4.0
"""Width in pixels of the local mean that may not brighten; its reach (3 sigma) stays inside a
tile's context margin."""

TONE_SIGMA = 3.0
"""Width in pixels of the local mean a restored tile follows. Below this scale the network's
content beats its input's; above it the input's local mean is the better estimate (held-out
skimage photos, width 3 against 4: noise sigma 15 +0.08 dB, sigma 25 +0.02, sigma 50 -0.03,
x2 upsampling +0.11; width 2 lost 0.18 dB at sigma 50)."""

TONE_CHANGING: tuple[str, ...] = ("haze", "rain", "low_light")
"""The degradations whose removal changes an image's local mean."""

READING_FLOOR = 0.2
"""Tile-level probabilities of a `TONE_CHANGING` type up to this read as none, and from
1 - READING_FLOOR as certain (linear between): the head's floor on tiles holding none of them
(the 99th percentile of its haze and rain readings on clean 256-px crops of skimage's colour
photos is 0.20 and 0.22). Taken at face value, those false readings let a noisy tile's tone drift
(CBSD68 first 8, σ 15/25/50: +0.07/+0.13/+0.24 dB with the floor, Rain100H +0.07, low light
+0.04; the skimage photos under noise +0.01 to +0.03)."""


def blur_radius(sigma: float) -> int:
    """How many pixels `gaussian_blur` of width `sigma` reaches (3 sigma)."""
    return int(3 * sigma)


GUARD_REACH = blur_radius(TONE_SIGMA) + blur_radius(SIGMA)
"""How many pixels around a restored pixel `tone_kept` then `never_brighter` look at."""


def tile_tone_changing(scene_haze: bool) -> tuple[str, ...]:
    """The `TONE_CHANGING` types whose presence in a tile frees its tone: all of them, or all but
    haze where the scene-scale pass judges haze. A tile of a large photo reads bright, soft regions
    as haze: a motion-blurred CBSD68 photo of sea spray lost 6.7 dB to a tile-level "dehazing"
    that the scene pass, sure there was no haze, would not have done."""
    return tuple(name for name in TONE_CHANGING if name != "haze" or not scene_haze)


def gaussian_blur(x: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), the border pixels repeated outwards."""
    radius = blur_radius(sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    rows = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    blurred = F.conv2d(padded, rows, groups=channels)
    return F.conv2d(blurred, rows.transpose(2, 3), groups=channels)


def input_mean(degraded: torch.Tensor, sigma: float, clipping: Clipping | None) -> torch.Tensor:
    """`degraded`'s local mean (a Gaussian of `sigma` pixels), taken back through the
    `clipping` of its noise where it was clipped (`allinone.infer.clipping`)."""
    mean = gaussian_blur(degraded, sigma)
    return mean if clipping is None else clipping.unclipped(mean)


def never_brighter(
    restored: torch.Tensor, degraded: torch.Tensor, clipping: Clipping | None = None
) -> torch.Tensor:
    """`restored` less the smooth excess of its local mean over `degraded`'s."""
    restored, degraded = restored.float(), degraded.float()
    excess = torch.relu(gaussian_blur(restored) - input_mean(degraded, SIGMA, clipping))
    return restored - excess


def keep_tone_weight(
    logits: torch.Tensor, changing: tuple[str, ...] = TONE_CHANGING
) -> torch.Tensor:
    """(B, 1, 1, 1): the probability that none of `changing` is present in each tile, from the
    composition head's (B, T) tile-level logits, readings below `READING_FLOOR` taken as none."""
    columns = [DEGRADATIONS.index(name) for name in changing]
    probability = torch.sigmoid(logits[:, columns].float())
    present = ((probability - READING_FLOOR) / (1 - 2 * READING_FLOOR)).clamp(0, 1)
    absent = (1 - present).prod(dim=1)
    return absent.view(-1, 1, 1, 1)


def follow_local_mean(
    restored: torch.Tensor,
    degraded: torch.Tensor,
    weight: torch.Tensor,
    clipping: Clipping | None = None,
) -> torch.Tensor:
    """`restored` with its local mean moved to `degraded`'s by `weight` (1: all the way)."""
    restored, degraded = restored.float(), degraded.float()
    change = input_mean(degraded, TONE_SIGMA, clipping) - gaussian_blur(restored, TONE_SIGMA)
    return restored + weight * change


def tone_kept(
    restored: torch.Tensor,
    logits: torch.Tensor,
    degraded: torch.Tensor,
    changing: tuple[str, ...] = TONE_CHANGING,
    clipping: Clipping | None = None,
) -> torch.Tensor:
    """`restored` following `degraded`'s local mean unless the (B, T) composition `logits` see one
    of the `changing` degradations: what the Restorer makes of one network pass. `clipping`: how
    `degraded` was clipped, if it was."""
    weight = keep_tone_weight(logits, changing)
    return follow_local_mean(restored, degraded, weight, clipping)
