"""The geometric self-ensemble (`Restorer.restore(..., ensemble=True)`, `--ensemble`) and the
flip-averaged composition (`Restorer.analyze(..., flips=True)`)."""

from __future__ import annotations

import numpy as np
import torch

from allinone.infer.ensemble import FLIPS, VIEWS, self_ensemble


def test_every_view_is_mapped_back() -> None:
    x = torch.arange(2 * 3 * 8 * 16, dtype=torch.float32).reshape(2, 3, 8, 16)
    seen = []

    def forward(view: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(view.shape[-2:]))
        return view * 2

    torch.testing.assert_close(self_ensemble(forward, x), x * 2)
    assert len(VIEWS) == len(set(VIEWS)) == 8
    assert seen.count((8, 16)) == 4 and seen.count((16, 8)) == 4  # quarter turns swap H and W


def test_the_views_average_a_position_dependent_forward() -> None:
    x = torch.zeros(1, 1, 8, 8)

    def forward(view: torch.Tensor) -> torch.Tensor:
        ramp = torch.arange(view.shape[-1], dtype=torch.float32)
        return view + ramp  # depends on where a pixel sits in the view

    averaged = self_ensemble(forward, x)
    torch.testing.assert_close(averaged, torch.full_like(x, 3.5))  # the mean of 0..7 everywhere


def test_restore_with_the_ensemble(tiny_restorer) -> None:
    image = np.random.default_rng(5).integers(0, 256, (72, 40, 3), dtype=np.uint8)
    single = tiny_restorer.restore(image)
    ensemble = tiny_restorer.restore(image, ensemble=True)
    assert ensemble.shape == image.shape and ensemble.dtype == np.uint8
    assert not np.array_equal(ensemble, single)
    flipped = tiny_restorer.restore(image[:, ::-1], ensemble=True)[:, ::-1]
    assert np.abs(flipped.astype(int) - ensemble).max() <= 1  # the same views, in another order
    tiled = tiny_restorer.restore(image, tile=16, overlap=16, ensemble=True)
    assert np.abs(tiled.astype(int) - ensemble).max() <= 2


def test_the_flips_keep_the_orientation() -> None:
    x = torch.arange(2 * 8 * 16, dtype=torch.float32).reshape(1, 2, 8, 16)
    seen = []

    def forward(view: torch.Tensor) -> torch.Tensor:
        seen.append(view)
        return view[:, :1]

    torch.testing.assert_close(self_ensemble(forward, x, FLIPS), x[:, :1])
    assert all(view.shape == x.shape for view in seen)
    flipped = {(torch.equal(v, x.flip(-1)), torch.equal(v, x.flip(-2))) for v in seen}
    assert len(FLIPS) == len(set(FLIPS)) == 4 and len(flipped) == 3  # x, and flips along X, Y


def test_analyze_averages_the_logits_of_the_four_flips(tiny_restorer) -> None:
    image = np.random.default_rng(6).integers(0, 256, (32, 48), dtype=np.uint8)

    def mean_logits(array: np.ndarray, flips: bool) -> np.ndarray:
        p = np.array(list(tiny_restorer.analyze(array, tile=0, flips=flips).probabilities.values()))
        return np.log(p / (1 - p))

    views = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    expected = np.mean([mean_logits(np.ascontiguousarray(v), False) for v in views], axis=0)
    np.testing.assert_allclose(mean_logits(image, True), expected, atol=1e-4)
    assert not np.allclose(mean_logits(image, False), expected, atol=1e-4)
