"""Neighbor2Neighbor sub-sampling and loss (`allinone.train.neighbours`)."""

from __future__ import annotations

import numpy as np
import torch

from allinone.train.neighbours import (
    REGULARISER,
    draw_neighbours,
    neighbour_loss,
    neighbour_pair,
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


def test_neighbour_pair_of_an_image() -> None:
    image = np.random.default_rng(2).random((8, 10, 3), dtype=np.float32)
    first, second = neighbour_pair(image, np.random.default_rng(3))
    assert first.shape == second.shape == (4, 5, 3)
    cells = image.reshape(4, 2, 5, 2, 3)
    for half in (first, second):
        assert all(
            any(np.array_equal(half[i, j], cells[i, dy, j, dx]) for dy in (0, 1) for dx in (0, 1))
            for i in range(4)
            for j in range(5)
        )
    assert not np.array_equal(first, second)


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
