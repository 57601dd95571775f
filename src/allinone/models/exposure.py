"""The exposure estimator: the tone curve that under-exposed an 8-bit photo, read from an overview.

From a 64-pixel patch alone the exposure to restore is ambiguous, and the restoration network
learnt it from such patches: it brightened a photo three stops under by nothing (10.1 dB in and
out). Over a whole scene it is not: a well-exposed photo's brightest parts are near white, its
histogram spreads over the range. So a small network of its own reads an overview of the whole
plane (block means, long side at most `OVERVIEW` pixels) together with the quantiles of its
channels, and gives the darkening it sees as the curve ``y = scale * x ** gamma`` of the training
sampler's low light (`allinone.degradations.low_light`); `ToneCurve.undo` inverts it. Like
Zero-DCE's curve estimation, it is trained without the restoration network
(`allinone.train.exposure`) and works with any restoration weights. `save_estimator` writes it;
`allinone.loading.load_estimator` reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from allinone.tone_curve import ToneCurve

OVERVIEW = 64
"""Long side in pixels of the overview the estimator reads."""
QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999)
"""Quantiles of each channel of the overview given to the estimator beside its features."""


def curve_parameters(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, gamma) of shape (B,) from the estimator's (B, 2) outputs."""
    return torch.exp(-F.softplus(raw[:, 0])), 1.0 + F.softplus(raw[:, 1])


def undo_curve(y: torch.Tensor, scale: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """`ToneCurve.undo` of (B, C, H, W) `y` with per-sample (B,) parameters, differentiable."""
    base = y.clamp(min=1e-4) / scale.view(-1, 1, 1, 1)
    return base ** (1.0 / gamma.view(-1, 1, 1, 1))


def overview_factor(height: int, width: int) -> int:
    """The side in pixels of the blocks that shrink a plane's long side to at most `OVERVIEW`:
    one rule for the training overviews (`overview_of`) and the Restorer's, streamed
    (`allinone.infer.auto_exposure.photo_overview`)."""
    return -(-max(height, width) // OVERVIEW)


def overview_of(image: torch.Tensor) -> torch.Tensor:
    """The (B, 3, h, w) block means of (B, 3, H, W) `image`, the long side at most `OVERVIEW`
    (partial blocks at the edges average what they hold)."""
    factor = overview_factor(*image.shape[-2:])
    if factor == 1:
        return image
    return F.avg_pool2d(image, factor, ceil_mode=True, count_include_pad=False)


class ExposureNet(nn.Module):
    """Overview (B, 3, h, w) in [0, 1] → (B, 2) raw curve outputs (see `curve_parameters`).

    Three strided convolutions, their features averaged and maxed over the overview, and the
    `QUANTILES` of each channel feed a two-layer perceptron."""

    quantiles: torch.Tensor

    def __init__(self, width: int = 24, hidden: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1),
            nn.GELU(),
        )
        self.head = nn.Sequential(
            nn.Linear(8 * width + 3 * len(QUANTILES), hidden),
            nn.GELU(),
            nn.Linear(hidden, 2),
        )
        self.register_buffer("quantiles", torch.tensor(QUANTILES), persistent=False)

    def forward(self, overview: torch.Tensor) -> torch.Tensor:
        features = self.features(overview)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3))], dim=1)
        levels = torch.quantile(overview.flatten(2).float(), self.quantiles, dim=2)
        levels = levels.permute(1, 2, 0).flatten(1)
        return self.head(torch.cat([pooled, levels.to(pooled.dtype)], dim=1))

    def curve(self, overview: torch.Tensor) -> ToneCurve:
        """The darkening of one (1, 3, h, w) overview."""
        with torch.inference_mode():
            scale, gamma = curve_parameters(self(overview.float()))
        return ToneCurve(float(scale[0]), float(gamma[0]))


def save_estimator(net: ExposureNet, path: Path, training: dict) -> Path:
    """Write `net`'s weights to `path` (.safetensors), with `training` (how it was trained) in
    the header as JSON; return the path."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata={"training": json.dumps(training, sort_keys=True)})
    return path
