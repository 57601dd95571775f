"""Neighbor2Neighbor sub-sampling and loss (`allinone.train.neighbours`)."""

from __future__ import annotations

import numpy as np
import torch

from allinone.train.neighbours import (
    REGULARISER,
    SPACING,
    blind_spots,
    draw_neighbours,
    neighbour_loss,
    subsample,
)


def test_drawn_pixels_are_distinct_neighbours_of_one_cell() -> None:
    pixels = draw_neighbours(np.random.default_rng(0), (2, 16, 16))
    rows, cols = pixels // 2, pixels % 2
    steps = (rows[..., 0] - rows[..., 1]).abs() + (cols[..., 0] - cols[..., 1]).abs()
    assert torch.all(steps == 1)
    assert set(pixels[..., 0].unique().tolist()) == {0, 1, 2, 3}


def test_subsample_takes_the_named_pixel_of_each_cell() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    pixels = torch.from_numpy(np.random.default_rng(1).integers(4, size=(2, 2, 3)))
    half = subsample(x, pixels)
    assert half.shape == (2, 3, 2, 3)
    for b, i, j in np.ndindex(2, 2, 3):
        dy, dx = divmod(int(pixels[b, i, j]), 2)
        assert torch.equal(half[b, :, i, j], x[b, :, 2 * i + dy, 2 * j + dx])


def test_blind_spots_are_the_mean_of_their_neighbours() -> None:
    image = np.random.default_rng(2).random((12, 10, 3), dtype=np.float32)
    masked, mask = blind_spots(image, np.random.default_rng(3))
    rows, cols = np.nonzero(mask.any(1))[0], np.nonzero(mask.any(0))[0]
    assert mask.sum() == len(rows) * len(cols)
    assert set(np.diff(rows)) == set(np.diff(cols)) == {SPACING}
    np.testing.assert_array_equal(masked[~mask], image[~mask])
    for y, x in zip(*np.nonzero(mask), strict=True):
        around = [
            image[y + dy, x + dx]
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))
            if 0 <= y + dy < 12 and 0 <= x + dx < 10
        ]
        if len(around) == 4:
            np.testing.assert_allclose(masked[y, x], np.mean(around, axis=0), rtol=1e-6)


def test_blind_spot_offsets_cover_every_pixel_once() -> None:
    """The SPACING x SPACING given offsets mask every pixel exactly once (a full-coverage score)."""
    image = np.random.default_rng(5).random((9, 11, 1)).astype(np.float32)
    rng = np.random.default_rng(0)
    masks = [
        blind_spots(image, rng, offset=(dy, dx))[1]
        for dy in range(SPACING)
        for dx in range(SPACING)
    ]
    np.testing.assert_array_equal(np.sum(masks, axis=0), np.ones((9, 11)))
    assert masks[0][0, 0] and masks[SPACING + 1][1, 1]


def test_blind_spot_psnr_ranks_denoisers_as_the_clean_image_does() -> None:
    """Scored on the blind spots against the noisy image, a smoothing filter beats the identity
    (whose blind spots only see their neighbours' mean) as it does against the clean image."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    clean = gaussian_filter(rng.random((64, 64, 1)), (3, 3, 0)).astype(np.float32) * 4
    noisy = (clean + rng.normal(0, 0.1, clean.shape)).astype(np.float32)
    masked, mask = blind_spots(noisy, rng)

    def errors(restore) -> tuple[float, float]:
        out = restore(masked)
        return float(np.mean((out - noisy)[mask] ** 2)), float(np.mean((out - clean)[mask] ** 2))

    identity = errors(lambda x: x)
    smoothed = errors(lambda x: gaussian_filter(x, (1.5, 1.5, 0)))
    assert smoothed[0] < identity[0] and smoothed[1] < identity[1]
    assert abs((smoothed[0] - smoothed[1]) - 0.01) < 0.003  # the noise variance, on average


def test_loss_of_the_identity_is_twice_the_noise_variance() -> None:
    """Copying the input learns nothing: its loss is the variance of the difference of two
    independent noisy pixels, 2 sigma^2 (the consistency term is zero for it)."""
    sigma = 0.1
    noisy = 0.5 + sigma * torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    loss = neighbour_loss(lambda x: x, noisy, np.random.default_rng(0))
    assert abs(float(loss) - 2 * sigma**2) < 0.05 * 2 * sigma**2


def test_loss_of_the_clean_image_is_the_noise_variance() -> None:
    """A restoration returning the (flat) clean image scores sigma^2 on the data term (the second
    image's noise) and sigma^2 on the consistency term (its output has no pixel difference to
    carry over), so sigma^2 (1 + REGULARISER)."""
    sigma = 0.1
    noisy = 0.5 + sigma * torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loss = neighbour_loss(lambda x: torch.full_like(x, 0.5), noisy, np.random.default_rng(1))
    expected = sigma**2 * (1 + REGULARISER)
    assert abs(float(loss) - expected) < 0.05 * expected
