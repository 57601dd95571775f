"""DFPIR's degradation-guided perturbation block (Tian et al., CVPR 2025), made blind.

In the paper a task prompt picks a channel permutation and guides a channel attention whose
logits are masked to their top 90 %. Here the routing comes from the network's own per-pixel
prediction of the degradation types (`route`, shape (B, T + 1, H, W): one weight per named type
plus one for "no degradation", summing to one), never from a ground-truth task id:

- channel perturbation: a fixed permutation per type sits between two 1x1 convolutions, and the
  permuted features are the route-weighted mix of the per-type permutations (identity for clean);
- attention perturbation: a learned channel-attention logit matrix per type and head, masked to
  its top 90 % before the softmax, applied to the values and mixed by the same route.

The route is per pixel and the attention acts within a pixel, so the block is local and tiled
inference stays seamless.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from allinone.models.blocks import LayerNorm2d, PointwiseConv


def top_fraction_mask(logits: torch.Tensor, keep: float) -> torch.Tensor:
    """Set all but the largest `keep` fraction of each row's logits to -inf."""
    k = max(1, math.ceil(keep * logits.shape[-1]))
    threshold = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


class PerturbationBlock(nn.Module):
    """Degradation-guided channel permutation and top-k masked channel attention."""

    permutations: torch.Tensor

    def __init__(
        self, channels: int, num_types: int, heads: int, keep: float = 0.9, seed: int = 0
    ) -> None:
        super().__init__()
        self.heads = heads
        self.keep = keep
        generator = torch.Generator().manual_seed(seed + channels)
        perms = [torch.arange(channels)]
        perms += [torch.randperm(channels, generator=generator) for _ in range(num_types)]
        self.register_buffer("permutations", torch.stack(perms), persistent=False)
        self.norm = LayerNorm2d(channels)
        self.conv_in = PointwiseConv(channels, channels)
        self.conv_out = PointwiseConv(channels, channels)
        per_head = channels // heads
        self.attn_logits = nn.Parameter(torch.zeros(num_types + 1, heads, per_head, per_head))
        self.value = PointwiseConv(channels, channels)
        self.project = PointwiseConv(channels, channels)
        nn.init.zeros_(self.project.weight)
        assert self.project.bias is not None
        nn.init.zeros_(self.project.bias)

    def permute(self, y: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """Route-weighted mix of the per-type channel permutations of `y`."""
        mixed = torch.zeros_like(y)
        for t, perm in enumerate(self.permutations):
            mixed = mixed + route[:, t : t + 1] * y[:, perm]
        return mixed

    def attend(self, x: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """Route-weighted mix of per-type masked channel attentions applied to the values."""
        b, c, h, w = x.shape
        attn = top_fraction_mask(self.attn_logits, self.keep).softmax(dim=-1)
        v = self.value(x).reshape(b, self.heads, c // self.heads, h * w)
        out = torch.zeros_like(v)
        for t in range(attn.shape[0]):
            out = out + (attn[t] @ v) * route[:, t].reshape(b, 1, 1, h * w)
        return out.reshape(b, c, h, w)

    def forward(self, x: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        y = self.conv_out(self.permute(self.conv_in(self.norm(x)), route))
        return x + self.project(self.attend(y, route))
