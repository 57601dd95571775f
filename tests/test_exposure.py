"""Keeping the exposure: percentile scaling never lets the Restorer brighten an image."""

from __future__ import annotations

import numpy as np
import torch

from allinone.infer.exposure import gaussian_blur, never_brighter
from allinone.infer.restorer import Restorer


def test_blur_keeps_a_constant_and_the_mean() -> None:
    constant = torch.full((1, 3, 10, 7), 0.3)
    torch.testing.assert_close(gaussian_blur(constant), constant)
    noise = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert abs(gaussian_blur(noise).mean() - noise.mean()) < 0.01
    assert gaussian_blur(noise).std() < noise.std() / 4


def test_a_lifted_background_is_taken_off_and_detail_kept() -> None:
    degraded = torch.full((1, 1, 48, 48), 0.05)
    checker = ((torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2 * 0.2 - 0.1).expand(
        1, 1, 48, 48
    )
    restored = degraded + 0.3 + checker  # brighter, with fine detail
    held = never_brighter(restored, degraded)[..., 12:-12, 12:-12]  # away from the borders
    inner = (..., slice(12, -12), slice(12, -12))
    torch.testing.assert_close(held.mean(), degraded.mean(), atol=2e-3, rtol=0)
    torch.testing.assert_close(
        held - held.mean(), checker[inner] - checker[inner].mean(), atol=2e-3, rtol=0
    )


def test_darkening_is_left_alone() -> None:
    degraded = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    darker = degraded * 0.7
    torch.testing.assert_close(never_brighter(darker, degraded), darker)


def test_percentile_scaling_keeps_the_exposure_and_range_scaling_does_not(monkeypatch) -> None:
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    monkeypatch.setattr(restorer, "_restore_forward", lambda x: x + 0.2)  # a brightening model
    dim = np.random.default_rng(0).poisson(8.0, (64, 64)).astype(np.uint8)
    kept = restorer.restore(dim, scaling="percentile").astype(float)
    corrected = restorer.restore(dim, scaling="range").astype(float)
    assert abs(kept.mean() - dim.mean()) < 0.5
    assert corrected.mean() > dim.mean() + 40
