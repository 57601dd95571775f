"""The composition head: which named degradations an image holds, per pixel and overall."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from allinone.models.blocks import PointwiseConv


class CompositionHead(nn.Module):
    """Per-pixel multi-label logits over the named types, from the query weights of every level.

    The atom weights of the three skips (upsampled to the finest level) and the latent features
    feed a small per-pixel MLP; the image-level logits are the spatial mean of the per-pixel ones,
    so the image-level composition of a tiled image is the mean of its tiles' maps.
    """

    def __init__(self, num_atoms: int, latent_channels: int, num_types: int) -> None:
        super().__init__()
        hidden = 64
        self.latent = PointwiseConv(latent_channels, hidden)
        self.atoms = PointwiseConv(num_atoms * 3, hidden)
        self.mlp = nn.Sequential(nn.GELU(), PointwiseConv(hidden, hidden), nn.GELU())
        self.out = PointwiseConv(hidden, num_types)

    def forward(self, weights: list[torch.Tensor], latent: torch.Tensor) -> torch.Tensor:
        """Per-pixel logits at the latent resolution, shape (B, T, H/8, W/8)."""
        size = cast(tuple[int, int], latent.shape[-2:])
        pooled = [F.adaptive_avg_pool2d(w, size) for w in weights]
        hidden = self.atoms(torch.cat(pooled, dim=1)) + self.latent(latent)
        return self.out(self.mlp(hidden))


def route_from_logits(pixel_logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Per-pixel routing (B, T + 1, H, W): "clean" first, then the types; sums to one."""
    probs = torch.sigmoid(pixel_logits)
    scale = probs.sum(dim=1, keepdim=True).clamp(min=1.0)
    probs = probs / scale
    route = torch.cat([1.0 - probs.sum(dim=1, keepdim=True), probs], dim=1)
    return F.interpolate(route, size=size, mode="nearest")
