"""Losses and the PSNR used to watch training."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from allinone.models.network import AllInOneNet, NetOutput

RESTORE_LOSSES = ("l1", "charbonnier", "psnr")
CHARBONNIER_EPS = 1e-3
PSNR_LOSS_SCALE = 0.02
"""The PSNR loss's factor: its gradients then match L1's at a typical 30 dB restoration
(|error| 0.025, MSE 1e-3), so the degradation and composition weights keep their meaning."""


def psnr(restored: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images in [0, 1] (restored is clipped first)."""
    mse = (restored.clamp(0, 1) - clean).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def restore_loss(restored: torch.Tensor, clean: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """The restoring direction's loss: L1, Charbonnier (a smooth L1), or the batch's mean
    log-MSE (minus PSNR up to a constant and `PSNR_LOSS_SCALE`, as in NAFNet's recipe)."""
    if kind == "l1":
        return F.l1_loss(restored, clean)
    error = restored.float() - clean.float()
    if kind == "charbonnier":
        return (error.pow(2) + CHARBONNIER_EPS**2).sqrt().mean()
    if kind == "psnr":
        mse = error.pow(2).flatten(1).mean(1)
        return PSNR_LOSS_SCALE * torch.log(mse + 1e-8).mean()
    raise ValueError(f"unknown restore loss {kind!r} (choose from {', '.join(RESTORE_LOSSES)})")


def share_indices(count: int, share: float, device: torch.device) -> torch.Tensor | None:
    """Indices of `share` of a batch of `count`, spread evenly over it (batches are built in
    blocks: photos, microscopy, real pairs, fluorescence); None for the whole batch."""
    if share >= 1.0:
        return None
    kept = max(1, round(count * share))
    return torch.linspace(0, count - 1, kept, device=device).round().long()


def bidirectional_loss(
    net: AllInOneNet,
    output: NetOutput,
    clean: torch.Tensor,
    degraded: torch.Tensor,
    labels: torch.Tensor | None,
    degrade_weight: float,
    composition_weight: float,
    restore_kind: str = "l1",
    degrade_share: float = 1.0,
) -> dict[str, torch.Tensor]:
    """NDR's two directions plus the composition BCE; `total` is what to minimise.

    restore: `restore_loss(restored, clean, restore_kind)`; degrade: L1(net.degrade(clean,
    representation), degraded) on `degrade_share` of the batch, which trains the atoms to
    describe the degradation; composition: BCE of the image-level logits.
    """
    terms = {"restore": restore_loss(output.restored, clean, restore_kind)}
    total = terms["restore"]
    if net.preset.ndr and degrade_weight > 0 and degrade_share > 0:
        index = share_indices(clean.shape[0], degrade_share, clean.device)
        representation = output.representation
        if index is not None:
            clean, degraded = clean[index], degraded[index]
            representation = [r[index] for r in representation]
        terms["degrade"] = F.l1_loss(net.degrade(clean, representation), degraded)
        total = total + degrade_weight * terms["degrade"]
    if labels is not None and composition_weight > 0:
        terms["composition"] = F.binary_cross_entropy_with_logits(output.logits.float(), labels)
        total = total + composition_weight * terms["composition"]
    terms["total"] = total
    return terms
