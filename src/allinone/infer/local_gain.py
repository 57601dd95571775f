"""Local gain: dim regions of a grey plane, far from any bright structure, shown to the network
at the exposure it was trained on.

Percentile scaling puts a plane's 99.9th percentile at 1. A few very bright objects (debris, a
saturated cell, beads: a fraction of a percent of the pixels) then hold that percentile, and
everything else reaches the network at a fraction of its training exposure, where it misreads
the noise: on FMD fields with four bright 12-pixel squares at 4x the field's brightness, the
network restored the rest of the field 2.8 dB *below* its noisy input, where total variation
gained 6 dB (`benchmarks/LOCAL_GAIN.md`).

`gain_map` reads, for each pixel, the brightest smoothed level within `WINDOW` pixels, and
gives the pixels whose neighbourhood stays below `TARGET` the gain that lifts it to `TARGET`,
smoothed so that it changes slowly across the plane. `gained_pass` runs the network on the
tile times that gain (values capped at `CAP`) and divides its restoration by the same gain, so
everything after the network (tone keeping, clipping, never brighter) sees the plane's own
scale. The gain is at most `top_gain` of the image: as much as lifts its bulk (`Normalization.
bulk`: the 95th percentile, read among the values below `TARGET` where bright objects cover
more than 5 % of the plane) to `TARGET`, at least `LEAST_TOP`, so that the empty background of
a normally exposed plane, far from any cell, is lifted little (lifted 64-fold it cost FMD
fields 0.07 dB). Where a bright structure is near, the gain is 1 and nothing changes: on FMD
fields 2-6 and the held-out procedural planes the restorations moved by 0.04 dB at most. A
small window keeps the halo of partly lifted pixels around a bright object small: 33 pixels
(smoothed by 8) left much of a 256-pixel plane with four specks in that halo.

The map is computed from each tile, context included: it reaches `REACH` pixels, within the
context tiles read around their cores at the default overlap, so neighbouring tiles agree.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from allinone.infer.normalize import DIM_LEVEL, Normalization
from allinone.infer.scene import NetworkPass

TARGET = DIM_LEVEL
"""The brightest level, in network units, that a pixel's neighbourhood is lifted to: restorations
of planes scaled so that their structures reach only 0.25 fell below the input, from 0.5 on they
matched those at full exposure (`benchmarks/LOCAL_GAIN.md`)."""
TOP = 64.0
"""The largest gain of any image."""
LEAST_TOP = 2.0
"""The largest gain of an image whose bulk is bright already."""
CAP = 1.5
"""Gained inputs are capped here: a bright pixel inside a gained halo stays in the range the
network knows."""
WINDOW = 9
"""Side of the square, in pixels, whose brightest level a pixel's gain is read from."""
DETAIL = 2.0
"""Sigma of the Gaussian that smooths the noise before the brightest level is read."""
SMOOTH = 3.0
"""Sigma of the Gaussian that smooths the gain itself."""
REACH = WINDOW // 2 + math.ceil(3 * (DETAIL + SMOOTH))
"""How far, in pixels, a pixel's gain looks."""


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, 1, h, w) `x` blurred by a Gaussian of `sigma`, its edges repeated."""
    radius = math.ceil(3 * sigma)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))


def top_gain(bulk: float) -> float:
    """The largest gain for an image whose bulk reaches `bulk` (network units): the gain that
    lifts it to `TARGET`, from `LEAST_TOP` to `TOP`."""
    return min(max(TARGET / max(bulk, TARGET / TOP), LEAST_TOP), TOP)


def plane_top(norm: Normalization, rgb: bool) -> float | None:
    """`top_gain` for planes under `norm`, or None where planes are not lifted: colour planes,
    and any scaling but percentiles (which keep the exposure; no tone curve undone)."""
    if rgb or norm.bulk is None or not norm.keep_exposure or norm.curve is not None:
        return None
    return top_gain(norm.bulk)


def gain_map(x: torch.Tensor, top: float) -> torch.Tensor:
    """(B, 1, h, w) gain, from 1 to `top`, for (B, C, h, w) network-input tiles `x`: `TARGET`
    over the brightest smoothed level within `WINDOW` pixels, smoothed."""
    level = _gaussian(x.float().mean(dim=1, keepdim=True), DETAIL)
    half = WINDOW // 2
    brightest = F.max_pool2d(
        F.pad(level, (half, half, half, half), mode="replicate"), WINDOW, stride=1
    )
    brightest = _gaussian(brightest, SMOOTH)
    return (TARGET / brightest.clamp(min=TARGET / top)).clamp(min=1.0)


def lift(x: torch.Tensor, top: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(`x` times its `gain_map` (at most `top`), in `x`'s dtype; the gain). A lifted value
    stops at `CAP`, or at its own value where that is higher: pixels whose gain is 1 are as
    they were."""
    gain = gain_map(x, top)
    values = x.float()
    lifted = torch.minimum(values * gain, values.clamp(min=CAP))
    return lifted.to(x.dtype), gain


def gained_pass(network: NetworkPass, top: float) -> NetworkPass:
    """`network` run on its input `lift`ed, its restoration divided by the same gain; the
    composition logits are those of the lifted input."""

    def run(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lifted, gain = lift(x, top)
        restored, logits = network(lifted)
        return restored.float() / gain, logits

    return run
