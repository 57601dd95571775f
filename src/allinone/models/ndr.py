"""NDR-Restore's neural degradation representation (Yao et al., TIP 2024).

A shared dictionary of degradation atoms; a *query* turns skip features into per-pixel softmax
weights over the atoms; an *injection* modulates the skip with the representation those weights
select, through a low-rank 3-D attention mask; a degradation network, used only in training,
re-degrades a clean image with the same representation (bidirectional optimisation).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from allinone.models.blocks import Downsample, LayerNorm2d, NAFBlock, PointwiseConv, Upsample


class DegradationDictionary(nn.Module):
    """`num_atoms` learned degradation atoms of `atom_dim` features each."""

    def __init__(self, num_atoms: int, atom_dim: int) -> None:
        super().__init__()
        self.atoms = nn.Parameter(torch.randn(num_atoms, atom_dim) / math.sqrt(atom_dim))

    @property
    def num_atoms(self) -> int:
        return self.atoms.shape[0]


class DegradationQuery(nn.Module):
    """Per-pixel softmax weights over the atoms, from the features of one skip.

    The query projection and the dot product with the atoms are folded into one 1x1 convolution
    (weights = atoms @ W_q), which costs `num_atoms * channels` per pixel instead of
    `atom_dim * (channels + num_atoms)`; the temperature is learned.
    """

    def __init__(self, channels: int, dictionary: DegradationDictionary) -> None:
        super().__init__()
        self.dictionary = [dictionary]
        atom_dim = dictionary.atoms.shape[1]
        self.norm = LayerNorm2d(channels)
        self.query = nn.Parameter(torch.randn(atom_dim, channels) / math.sqrt(channels))
        self.log_temperature = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        atoms = self.dictionary[0].atoms
        kernel = (atoms @ self.query)[:, :, None, None] / math.sqrt(atoms.shape[1])
        logits = nn.functional.conv2d(self.norm(x), kernel)
        return (logits / self.log_temperature.exp()).softmax(dim=1)


class DegradationInjection(nn.Module):
    """Modulate features with the representation selected by per-pixel atom weights.

    The representation is `r = weights . atoms`, projected to the feature channels. A 3-D mask
    `M[c, y, x] = sigmoid(sum_r a[r, c] s[r, y, x])` of rank `rank` is built from its factors (a 1x1
    convolution from the `rank` spatial factors), never as a rank x C x H x W tensor; the skip then
    becomes `x + M * (f * x + g)` with `f`, `g` from the representation (zero at initialisation, so
    the injection starts as the identity).
    """

    def __init__(self, channels: int, dictionary: DegradationDictionary, rank: int) -> None:
        super().__init__()
        self.dictionary = [dictionary]
        num_atoms, atom_dim = dictionary.atoms.shape
        self.atom_to_channels = nn.Linear(atom_dim, channels, bias=False)
        self.spatial_factors = PointwiseConv(num_atoms, rank)
        self.channel_factors = PointwiseConv(rank, channels)
        self.modulation = PointwiseConv(channels, channels * 2)
        nn.init.zeros_(self.modulation.weight)
        assert self.modulation.bias is not None
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        atoms = self.atom_to_channels(self.dictionary[0].atoms)
        representation = nn.functional.conv2d(weights, atoms.t()[:, :, None, None])
        mask = torch.sigmoid(self.channel_factors(self.spatial_factors(weights)))
        f, g = self.modulation(representation).chunk(2, dim=1)
        return x + mask * (f * x + g)


class DegradationNetwork(nn.Module):
    """Re-degrade a clean image with a given representation (training only).

    A small three-level U-Net whose features at each level are modulated by the per-pixel atom
    weights queried from the degraded image at the same level, so the atoms must carry what the
    degradation did for this network to reproduce it.
    """

    def __init__(self, width: int, dictionary: DegradationDictionary, rank: int) -> None:
        super().__init__()
        widths = (width, width * 2, width * 4)
        self.embed = nn.Conv2d(3, width, 3, padding=1)
        self.enc = nn.ModuleList(NAFBlock(c) for c in widths)
        self.inject = nn.ModuleList(DegradationInjection(c, dictionary, rank) for c in widths)
        self.down = nn.ModuleList(Downsample(c) for c in widths[:2])
        self.up = nn.ModuleList(Upsample(c) for c in widths[1:])
        self.fuse = nn.ModuleList(PointwiseConv(c * 2, c) for c in widths[:2])
        self.dec = nn.ModuleList(NAFBlock(c) for c in widths[:2])
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, clean: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
        x = self.embed(clean)
        skips = []
        for level in range(3):
            x = self.inject[level](self.enc[level](x), weights[level])
            if level < 2:
                skips.append(x)
                x = self.down[level](x)
        for level in (1, 0):
            x = self.up[level](x)
            x = self.dec[level](self.fuse[level](torch.cat([x, skips[level]], dim=1)))
        return clean + self.out(x)
