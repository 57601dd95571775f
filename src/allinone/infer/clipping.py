"""Clipped noise: the local mean of a noisy image whose values were clipped to their range.

Noise added before an image is stored in integers is clipped at the dtype's ends, which biases
the image near them: under noise of σ 25 grey levels a clean 250 averages 242 once clipped at
255, a clean 5 averages 13. The Restorer keeps its output's local mean on its input's
(`allinone.infer.tone`), which would keep that bias: in CBSD68 photos with bright sky,
a third of the pixels came out 10 levels too dark. `unclipped_mean` takes a local mean back to
the mean of the values before clipping, given the noise's standard deviation (`noise_sigma`)
and where the range ends (`Bounds`, in the network's units). The Restorer reads σ once per plane
(`block_details` of all its rows), so that neighbouring tiles take their means back alike.

The model is Gaussian noise on a locally constant image: exact on flat regions (sky, background),
where the bias matters most, and a small correction elsewhere, since at most a few σ from the
ends does the clipping change anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

Bounds = tuple[float, float]
"""The values (low, high) at which an image was clipped, in the network's units."""

MAD_TO_SIGMA = 0.6745
"""The median absolute value of a normal variable, in units of its standard deviation."""

NEWTON_STEPS = 3
"""Newton steps of `unclipped_mean`: from the local mean itself, three bring it within 2e-7 of
the root for every clean value inside the bounds and σ from 0.01 to 0.3 (two: within 2.4e-4,
0.06 of a grey level)."""


def noise_sigma(x: torch.Tensor, bounds: Bounds | None = None) -> torch.Tensor:
    """(B, 1, 1, 1): the standard deviation of white noise in each image of `x` (B, C, H, W),
    from the median absolute finest-scale Haar diagonal detail (Donoho's estimator), which
    texture and edges barely raise. 2x2 blocks touching `bounds` are left out: clipping flattens
    them (a CBSD68 photo with bright sky under σ 25 read 20.8 with them, 25.2 without); so are
    blocks holding a NaN or an infinity; 0 where every block is left out."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w].float()
    corners = torch.stack(
        [x[..., 0::2, 0::2], x[..., 0::2, 1::2], x[..., 1::2, 0::2], x[..., 1::2, 1::2]]
    )
    detail = ((corners[0] - corners[1] - corners[2] + corners[3]) / 2).abs().flatten(1)
    kept = corners.isfinite()
    if bounds is not None:
        kept &= (corners > bounds[0]) & (corners < bounds[1])
    median = _median_of_kept(detail, kept.all(dim=0).flatten(1))
    return (median / MAD_TO_SIGMA).view(-1, 1, 1, 1)


def block_details(values: np.ndarray, bounds: Bounds | None = None) -> np.ndarray:
    """The absolute finest-scale Haar diagonal details that `noise_sigma` takes the median of,
    for the 2 x 2 blocks of (h, w) or (h, w, C) `values`, NaN for the blocks it leaves out."""
    h, w = values.shape[0] // 2 * 2, values.shape[1] // 2 * 2
    x = np.asarray(values[:h, :w], dtype=np.float32)
    corners = np.stack([x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]])
    kept = np.isfinite(corners)
    if bounds is not None:
        kept &= (corners > bounds[0]) & (corners < bounds[1])
    with np.errstate(invalid="ignore"):
        detail = np.abs((corners[0] - corners[1] - corners[2] + corners[3]) / 2)
    return np.where(kept.all(axis=0), detail, np.float32(np.nan))


def _median_of_kept(values: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """(B,): the lower median of each row's `kept` values, 0 for a row with none. The others
    become -inf or +inf in the proportion that puts the row's median on the kept one, so that
    `median`, which every backend has (`nanmedian` along a dim has none on MPS), picks it."""
    length = values.shape[1]
    count = kept.sum(dim=1, keepdim=True)
    lowered = (length - 1) // 2 - (count - 1) // 2  # how many of the others go to -inf
    rank = (~kept).cumsum(dim=1)
    filler = torch.where(rank <= lowered, -math.inf, math.inf)
    median = torch.where(kept, values, filler).median(dim=1).values
    return torch.where(count.squeeze(1) > 0, median, torch.zeros_like(median))


def _clipping_terms(
    value: torch.Tensor, sigma: torch.Tensor, bounds: Bounds
) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[clip(value + noise, low, high)], its derivative in `value`) for Gaussian noise of
    standard deviation `sigma`, from one normal cdf and density per bound."""
    low, high = bounds
    above, below = (value - low) / sigma, (high - value) / sigma
    cdf_above, cdf_below = torch.special.ndtr(above), torch.special.ndtr(below)
    pdf_above = torch.exp(-0.5 * above**2) / math.sqrt(2 * math.pi)
    pdf_below = torch.exp(-0.5 * below**2) / math.sqrt(2 * math.pi)
    raised = pdf_above - above * (1 - cdf_above)  # E[max(Z - above, 0)]: what clipping at low adds
    lowered = pdf_below - below * (1 - cdf_below)  # and what clipping at high takes off
    return value + sigma * (raised - lowered), cdf_above + cdf_below - 1


def clipped_mean(value: torch.Tensor, sigma: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """E[clip(value + noise, low, high)] for Gaussian noise of standard deviation `sigma`."""
    return _clipping_terms(value, sigma.clamp_min(1e-6), bounds)[0]


def unclipped_mean(mean: torch.Tensor, sigma: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """The value whose `clipped_mean` is `mean`, within `bounds`: a noisy image's local mean
    taken back to its clean image's."""
    sigma = sigma.clamp_min(1e-6)
    value = mean.clamp(*bounds)
    for _ in range(NEWTON_STEPS):
        clipped, slope = _clipping_terms(value, sigma, bounds)
        value = (value + (mean - clipped) / slope.clamp_min(1e-6)).clamp(*bounds)
    return value


@dataclass(frozen=True)
class Clipping:
    """How a batch of tiles was clipped: at `bounds`, under noise of standard deviation `sigma`
    (B, 1, 1, 1), read from the tiles themselves (`read`) or from their planes. One reading
    serves every local mean of the batch and every flip or rotation of it (the blocks of an
    even-sized tile map onto blocks)."""

    bounds: Bounds
    sigma: torch.Tensor

    @classmethod
    def read(cls, x: torch.Tensor, bounds: Bounds | None) -> Clipping | None:
        """The clipping of the tiles `x` at `bounds`; None where nothing clipped them."""
        return None if bounds is None else cls(bounds, noise_sigma(x, bounds))

    def unclipped(self, mean: torch.Tensor) -> torch.Tensor:
        """`unclipped_mean` of a local mean of these tiles."""
        return unclipped_mean(mean, self.sigma, self.bounds)
