"""Geometric self-ensemble: restore the eight flips and rotations of a batch and average them.

Each view is computed by the network on the transformed tile and mapped back, so the average
is over eight estimates of the same pixels; it costs eight forward passes and typically gains a
few tenths of a dB to over 1 dB PSNR (more for a less trained model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VIEWS = tuple((turns, flip) for turns in range(4) for flip in (False, True))
"""(quarter turns, horizontal flip) of each view; (0, False) is the input itself."""


def _view(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, turns, dims=(-2, -1))
    return x.flip(-1) if flip else x


def _unview(x: torch.Tensor, turns: int, flip: bool) -> torch.Tensor:
    x = x.flip(-1) if flip else x
    return torch.rot90(x, -turns, dims=(-2, -1))


def self_ensemble(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The mean of `forward` over the eight views of `x` (B, C, H, W), each mapped back."""
    total = None
    for turns, flip in VIEWS:
        restored = _unview(forward(_view(x, turns, flip)), turns, flip).float()
        total = restored if total is None else total + restored
    return total / len(VIEWS)
