"""The scores: PSNR and SSIM of 8-bit images, Y-channel PSNR, ROC AUC."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(clean: np.ndarray, restored: np.ndarray) -> float:
    """PSNR in dB of 8-bit images."""
    return float(peak_signal_noise_ratio(clean, restored, data_range=255))


def ssim(clean: np.ndarray, restored: np.ndarray) -> float:
    """SSIM of 8-bit grey (H, W) or RGB (H, W, 3) images."""
    channel_axis = 2 if clean.ndim == 3 else None
    return float(structural_similarity(clean, restored, channel_axis=channel_axis, data_range=255))


def luma(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 Y in [16, 235] of an 8-bit RGB image, as float (the SR convention)."""
    rgb = image.astype(np.float64) / 255
    return 16 + rgb @ np.array([65.481, 128.553, 24.966])


def psnr_y(clean: np.ndarray, restored: np.ndarray, shave: int) -> float:
    """Y-channel PSNR with `shave` pixels cut from every border."""
    inner = (slice(shave, -shave or None), slice(shave, -shave or None))
    return float(peak_signal_noise_ratio(luma(clean)[inner], luma(restored)[inner], data_range=255))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties averaged.

    NaN when `labels` holds only one class.
    """
    positive = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2)[inverse.reshape(-1)]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
