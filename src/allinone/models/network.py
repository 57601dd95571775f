"""AllInOneNet: a three-level U-Net wiring NDR's query/injection and DFPIR's perturbation blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from allinone.models.blocks import Downsample, PointwiseConv, Upsample, make_stage
from allinone.models.dfpir import PerturbationBlock
from allinone.models.heads import CompositionHead, route_from_logits
from allinone.models.ndr import (
    DegradationDictionary,
    DegradationInjection,
    DegradationNetwork,
    DegradationQuery,
)
from allinone.models.presets import PRESETS, Preset
from allinone.types import DEGRADATIONS

REACH_SHARE = 1e-3
"""The share of a restored pixel's sensitivity to its input that may lie beyond its `reach`."""
PROBE_RADIUS = 96
"""Pixels of probe around the outputs whose reach is measured: the most a reach can be."""


@dataclass
class NetOutput:
    """What one forward pass gives."""

    restored: torch.Tensor
    """(B, 3, H, W) restored image in [0, 1] (not clipped)."""
    pixel_logits: torch.Tensor
    """(B, T, H/8, W/8) per-pixel composition logits."""
    representation: list[torch.Tensor]
    """Per-pixel atom weights at the three skips, for `AllInOneNet.degrade`."""

    @property
    def logits(self) -> torch.Tensor:
        """(B, T) image-level composition logits: the mean of the per-pixel ones."""
        return self.pixel_logits.mean(dim=(2, 3))


class AllInOneNet(nn.Module):
    """Blind all-in-one restoration network.

    Encoder (three levels and a latent) → degradation query at each skip → composition head →
    [DFPIR perturbation of skips and latent, routed by the predicted composition] → [NDR injection
    of the representation into the skips] → decoder → residual output. Input height and width
    must be multiples of `multiple`.
    """

    multiple = 8

    def __init__(self, preset: Preset) -> None:
        super().__init__()
        self.preset = preset
        p = preset
        widths = (p.width, p.width * 2, p.width * 4)
        latent_width = p.width * 8
        num_types = len(DEGRADATIONS)
        self.embed = nn.Conv2d(3, p.width, 3, padding=1)
        self.encoders = nn.ModuleList(
            make_stage(p.block, c, n, h, p.ffn_expansion)
            for c, n, h in zip(widths, p.enc_blocks, p.heads[:3], strict=True)
        )
        self.downs = nn.ModuleList(Downsample(c) for c in widths)
        self.latent = make_stage(
            p.block, latent_width, p.latent_blocks, p.heads[3], p.ffn_expansion
        )
        self.dictionary = DegradationDictionary(p.num_atoms, p.atom_dim)
        self.queries = nn.ModuleList(DegradationQuery(c, self.dictionary) for c in widths)
        self.composition = CompositionHead(p.num_atoms, latent_width, num_types)
        if p.ndr:
            self.injections = nn.ModuleList(
                DegradationInjection(c, self.dictionary, p.rank) for c in widths
            )
            self.degradation_net = DegradationNetwork(p.degradation_width, self.dictionary, p.rank)
        if p.dfpir:
            self.perturb = nn.ModuleList(
                PerturbationBlock(c, num_types, h)
                for c, h in zip((*widths, latent_width), p.heads, strict=True)
            )
        self.ups = nn.ModuleList(Upsample(c * 2) for c in widths)
        self.fuse = nn.ModuleList(PointwiseConv(c * 2, c) for c in widths)
        self.decoders = nn.ModuleList(
            make_stage(p.block, c, n, h, p.ffn_expansion)
            for c, n, h in zip(widths, reversed(p.dec_blocks), p.heads[:3], strict=True)
        )
        self.refine = make_stage(p.block, p.width, p.refine_blocks, p.heads[0], p.ffn_expansion)
        self.out = nn.Conv2d(p.width, 3, 3, padding=1)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Skip features of the three levels and the latent features."""
        skips = []
        y = self.embed(x)
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        return skips, self.latent(y)

    def analyze(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel composition logits only (B, T, H/8, W/8): the encoder half of a forward."""
        skips, latent = self.encode(x)
        weights = [query(s) for query, s in zip(self.queries, skips, strict=True)]
        return self.composition(weights, latent)

    def forward(self, x: torch.Tensor) -> NetOutput:
        skips, latent = self.encode(x)
        weights = [query(s) for query, s in zip(self.queries, skips, strict=True)]
        pixel_logits = self.composition(weights, latent)
        if self.preset.dfpir:
            route = route_from_logits(pixel_logits.detach(), latent.shape[-2:])
            latent = self.perturb[3](latent, route)
            skips = [
                block(s, route_from_logits(pixel_logits.detach(), s.shape[-2:]))
                for block, s in zip(self.perturb[:3], skips, strict=True)
            ]
        if self.preset.ndr:
            skips = [inj(s, w) for inj, s, w in zip(self.injections, skips, weights, strict=True)]
        y = latent
        for level in (2, 1, 0):
            y = self.ups[level](y)
            y = self.decoders[level](self.fuse[level](torch.cat([y, skips[level]], dim=1)))
        restored = x + self.out(self.refine(y))
        return NetOutput(restored, pixel_logits, weights)

    def reach(self, share: float = REACH_SHARE) -> int:
        """How far, in pixels (a multiple of `multiple`), a restored pixel looks: the smallest
        margin around a `multiple`-pixel square of outputs outside which less than `share` of
        their sensitivity to the input lies (the absolute gradient of their sum, on a seeded
        noisy grey probe), at most `PROBE_RADIUS`. Tiles need this much context to restore their
        cores as a whole-image pass does: the receptive field reaches further, with weights too
        small to move a grey level (the shipped model's reaches 74 pixels, its reach is 64)."""
        m, r = self.multiple, PROBE_RADIUS
        size = 2 * r + m
        noise = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        probe = (0.5 + 0.15 * (noise - 0.5)).to(self.embed.weight.device).requires_grad_()
        with torch.enable_grad():
            output = self(probe).restored[..., r : r + m, r : r + m]
            (gradient,) = torch.autograd.grad(output.sum(), probe)
        weight = gradient.abs().sum(dim=(0, 1)).double()
        total = weight.sum()
        for margin in range(0, r, m):
            inside = weight[r - margin : r + m + margin, r - margin : r + m + margin].sum()
            if total - inside <= share * total:
                return margin
        return r

    def degrade(self, clean: torch.Tensor, representation: list[torch.Tensor]) -> torch.Tensor:
        """Re-degrade `clean` with a representation from `forward` (bidirectional training)."""
        if not self.preset.ndr:
            raise RuntimeError("this network has no degradation network (preset without NDR)")
        return self.degradation_net(clean, representation)

    def inference_modules(self) -> list[str]:
        """Names of the state-dict prefixes used at inference (the degradation net is not)."""
        return [name for name, _ in self.named_children() if name != "degradation_net"]


def build_network(preset: str | Preset) -> AllInOneNet:
    """A freshly initialised network of a named preset (or a `Preset`)."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    return AllInOneNet(preset)
