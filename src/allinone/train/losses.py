"""Losses and the PSNR used to watch training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from allinone.models.network import AllInOneNet, NetOutput


def psnr(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [0, 1] (restored is clipped first)."""
    mse = (restored.clamp(0, 1) - clean).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def bidirectional_loss(
    net: AllInOneNet,
    output: NetOutput,
    clean: torch.Tensor,
    degraded: torch.Tensor,
    labels: torch.Tensor | None,
    degrade_weight: float,
    composition_weight: float,
) -> dict[str, torch.Tensor]:
    """NDR's two directions plus the composition BCE; `total` is what to minimise.

    restore: L1(restored, clean); degrade: L1(net.degrade(clean, representation), degraded), which
    trains the atoms to describe the degradation; composition: BCE of the image-level logits.
    """
    terms = {"restore": F.l1_loss(output.restored, clean)}
    total = terms["restore"]
    if net.preset.ndr and degrade_weight > 0:
        terms["degrade"] = F.l1_loss(net.degrade(clean, output.representation), degraded)
        total = total + degrade_weight * terms["degrade"]
    if labels is not None and composition_weight > 0:
        terms["composition"] = F.binary_cross_entropy_with_logits(output.logits.float(), labels)
        total = total + composition_weight * terms["composition"]
    terms["total"] = total
    return terms
