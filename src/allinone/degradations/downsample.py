"""Resolution loss: antialiased downsampling followed by bicubic resizing to the input size."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from allinone.degradations._common import Param, per_sample


def _down_up(x: Tensor, factor: float) -> Tensor:
    h, w = x.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))
    low = F.interpolate(x.float(), size=small, mode="bicubic", antialias=True, align_corners=False)
    back = F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False)
    return back.clamp(0, 1).to(x.dtype)


def low_resolution(x: Tensor, factor: Param) -> Tensor:
    """Downsample each image of ``x`` (B, C, H, W) by its ``factor`` (e.g. 2, 3 or 4) with an
    antialiased bicubic filter, then resize back to (H, W) with bicubic interpolation.

    Samples sharing a factor are processed together.
    """
    factors = per_sample(factor, x)
    out = x.clone()
    for value in factors.unique().tolist():
        chosen = factors == value
        out[chosen] = _down_up(x[chosen], value)
    return out
