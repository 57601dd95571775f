"""Layers shared by the networks: normalisation, convolutional and transformer blocks, resampling.

Every block here is local (no pooling over the whole image), so that a tiled restore with enough
context gives the same result as a whole-image one; the exception is `RestormerBlock`, whose
transposed attention pools over the input, as in the paper it reproduces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _cpu_channels_last(x: torch.Tensor) -> bool:
    """True for a CPU tensor whose channels are its innermost dimension in memory (NHWC)."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return channels_last and x.device.type == "cpu"


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution. On a channels-last CPU tensor it runs as one matrix product over the
    pixels (the same arithmetic as the convolution, without the im2col copy of PyTorch's CPU
    fallback for 1x1 kernels, about twice as fast); elsewhere it is `nn.Conv2d`."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _cpu_channels_last(x):
            return super().forward(x)
        weight = self.weight.view(self.out_channels, self.in_channels)
        return F.linear(x.permute(0, 2, 3, 1), weight, self.bias).permute(0, 3, 1, 2)


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of each pixel."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_channels_last(x):  # one fused kernel over the innermost (channel) dimension
            shape = (x.shape[1],)
            pixels = F.layer_norm(x.permute(0, 2, 3, 1), shape, self.weight, self.bias, self.eps)
            return pixels.permute(0, 3, 1, 2)
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def simple_gate(x: torch.Tensor) -> torch.Tensor:
    """NAFNet's gate: split the channels in two halves and multiply them."""
    a, b = x.chunk(2, dim=1)
    return a * b


class NAFBlock(nn.Module):
    """A NAFNet-style gated convolution block (without global channel attention, to stay local)."""

    def __init__(self, channels: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.norm1 = LayerNorm2d(channels)
        self.expand = PointwiseConv(channels, hidden)
        self.depthwise = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.project = PointwiseConv(hidden // 2, channels)
        self.norm2 = LayerNorm2d(channels)
        self.ffn_in = PointwiseConv(channels, hidden)
        self.ffn_out = PointwiseConv(hidden // 2, channels)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(simple_gate(self.depthwise(self.expand(self.norm1(x)))))
        x = x + self.beta * y
        y = self.ffn_out(simple_gate(self.ffn_in(self.norm2(x))))
        return x + self.gamma * y


class TransposedAttention(nn.Module):
    """Restormer's multi-Dconv head transposed attention: attention across channels."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = PointwiseConv(channels, channels * 3)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3)
        self.project = PointwiseConv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project((attn @ v).reshape(b, c, h, w))


class GatedFeedForward(nn.Module):
    """Restormer's gated depthwise feed-forward network."""

    def __init__(self, channels: int, expansion: float) -> None:
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = PointwiseConv(channels, hidden * 2)
        self.depthwise = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2)
        self.project_out = PointwiseConv(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.depthwise(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * b)


class RestormerBlock(nn.Module):
    """Restormer's transformer block (the `paper` preset's building block)."""

    def __init__(self, channels: int, heads: int, expansion: float) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = TransposedAttention(channels, heads)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GatedFeedForward(channels, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def make_stage(kind: str, channels: int, count: int, heads: int, expansion: float) -> nn.Sequential:
    """A sequence of `count` blocks of the given kind (`naf` or `restormer`)."""
    if kind == "naf":
        return nn.Sequential(*(NAFBlock(channels, expansion) for _ in range(count)))
    if kind == "restormer":
        return nn.Sequential(*(RestormerBlock(channels, heads, expansion) for _ in range(count)))
    raise ValueError(f"unknown block kind {kind!r}")


class Downsample(nn.Module):
    """Halve the resolution and double the channels (2x2 convolution with stride 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double the resolution and halve the channels (1x1 convolution, then pixel shuffle)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = PointwiseConv(channels, channels * 2)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))
