"""Clipped noise: its bias on local means, undone given the noise level read from the tile or
its plane."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import smoothing_forward

from allinone.infer import pipeline
from allinone.infer.axes import PlaneLayout
from allinone.infer.clipping import (
    Clipping,
    _median_of_kept,
    block_details,
    clipped_mean,
    noise_sigma,
    unclipped_mean,
)
from allinone.infer.ensemble import VIEWS
from allinone.infer.normalize import Normalization, fit_normalization
from allinone.infer.pipeline import PlaneSource
from allinone.infer.restorer import Restorer
from allinone.infer.tone import follow_local_mean, never_brighter

UNIT = (0.0, 1.0)


def _noisy(clean: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
    return (clean + sigma * noise).clamp(*UNIT)


@pytest.mark.parametrize("value", [0.0, 0.03, 0.5, 0.95, 1.0])
def test_the_clipped_mean_is_that_of_clipped_noise(value: float) -> None:
    sigma = 0.1
    simulated = _noisy(torch.full((1, 1, 1000, 1000), value), sigma).mean()
    expected = clipped_mean(torch.tensor(value), torch.tensor(sigma), UNIT)
    assert expected.item() == pytest.approx(simulated.item(), abs=5e-4)


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.3])
def test_unclipping_inverts_clipping_and_stops_at_the_bounds(sigma: float) -> None:
    values = torch.linspace(0.0, 1.0, 501)
    sigmas = torch.full_like(values, sigma)
    back = unclipped_mean(clipped_mean(values, sigmas, UNIT), sigmas, UNIT)
    torch.testing.assert_close(back, values, atol=1e-5, rtol=0)
    beyond = unclipped_mean(torch.tensor([-0.2, 1.0, 1.3]), torch.full((3,), sigma), UNIT)
    torch.testing.assert_close(beyond, torch.tensor([0.0, 1.0, 1.0]))


def test_the_noise_level_is_read_past_texture_and_clipped_blocks() -> None:
    ramp = torch.linspace(0.2, 0.8, 128)
    smooth = (ramp[:, None] + 0.1 * torch.sin(ramp[None, :] * 40)).expand(1, 3, 128, 128)
    assert noise_sigma(_noisy(smooth, 0.05), UNIT).item() == pytest.approx(0.05, rel=0.05)
    half_white = smooth.clone()
    half_white[..., :, 64:] = 1.0  # a saturated sky over half the tile
    noisy = _noisy(half_white, 0.1)
    # the few sky blocks that escape clipping carry truncated noise: a little low, and far less
    # so than with the clipped blocks counted
    assert noise_sigma(noisy, UNIT).item() == pytest.approx(0.1, rel=0.1)
    assert noise_sigma(noisy).item() < 0.08
    white = torch.ones(2, 3, 16, 16)
    assert noise_sigma(white, UNIT).flatten().tolist() == [0.0, 0.0]


def test_the_noise_level_leaves_out_blocks_holding_nan_or_infinity() -> None:
    ramp = torch.linspace(0.2, 0.8, 128)
    noisy = _noisy(ramp[:, None].expand(1, 1, 128, 128), 0.05)
    holed = noisy.clone()
    holed[..., :, :40] = torch.nan
    holed[..., 100:, 90:] = torch.inf
    assert noise_sigma(holed).item() == pytest.approx(0.05, rel=0.1)
    assert noise_sigma(torch.full((1, 1, 8, 8), torch.nan)).item() == 0.0


def _bright_sky(value: float, size: int = 96) -> torch.Tensor:
    """(1, 3, size, size): a flat `value` over the right half, a mid-grey ramp on the left."""
    clean = torch.linspace(0.3, 0.6, size).view(1, 1, -1, 1).repeat(1, 3, 1, size)
    clean[..., size // 2 :] = value
    return clean


@pytest.mark.parametrize("length", [1, 2, 7, 64])
def test_the_median_of_the_kept_blocks_is_torchs_median_of_them(length: int) -> None:
    generator = torch.Generator().manual_seed(length)
    values = torch.rand(50, length, generator=generator)
    kept = torch.rand(50, length, generator=generator) < torch.rand(50, 1, generator=generator)
    expected = [
        row[keep].median() if keep.any() else torch.tensor(0.0)
        for row, keep in zip(values, kept, strict=True)
    ]
    torch.testing.assert_close(_median_of_kept(values, kept), torch.stack(expected))


def test_one_reading_serves_every_view_of_an_even_tile() -> None:
    noisy = _noisy(_bright_sky(0.97, size=64), 0.1)
    reading = Clipping.read(noisy, UNIT).sigma
    for turns, flip in VIEWS:
        view = torch.rot90(noisy, turns, dims=(-2, -1))
        view = view.flip(-1) if flip else view
        assert torch.equal(Clipping.read(view, UNIT).sigma, reading)
    assert Clipping.read(noisy, None) is None


def test_a_noisy_bright_region_keeps_its_clean_mean() -> None:
    clean = _bright_sky(0.97)
    noisy = _noisy(clean, 0.1)
    restored = torch.full_like(clean, 0.5)
    inner = (..., slice(16, -16), slice(64, -16))
    biased = follow_local_mean(restored, noisy, torch.ones(1, 1, 1, 1))[inner].mean()
    clipping = Clipping.read(noisy, UNIT)
    kept = follow_local_mean(restored, noisy, torch.ones(1, 1, 1, 1), clipping)[inner].mean()
    assert biased.item() < 0.95
    assert kept.item() == pytest.approx(0.97, abs=0.005)
    assert never_brighter(clean, noisy)[inner].mean().item() < 0.95  # the clean tone held back
    assert never_brighter(clean, noisy, clipping)[inner].mean().item() > 0.96


def test_integer_images_are_clipped_at_their_dtypes_ends_and_floats_nowhere() -> None:
    assert fit_normalization(np.zeros(4, np.uint8), "range").clip_bounds() == UNIT
    norm = Normalization(offset=100.0, scale=1000.0, dtype=np.dtype(np.uint16))
    assert norm.clip_bounds() == (-0.1, 65.435)
    assert fit_normalization(np.zeros(4, np.float32)).clip_bounds() is None


def test_the_restorer_takes_a_noisy_bright_photo_back_to_its_clean_level(monkeypatch) -> None:
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    monkeypatch.setattr(restorer.net, "forward", smoothing_forward)
    clean = _bright_sky(250 / 255)[0, 0].numpy() * 255
    noise = np.random.default_rng(0).normal(0, 25, clean.shape)
    noisy = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)
    sky = (slice(16, -16), slice(64, -16))
    assert noisy[sky].mean() < 243  # the clipping's bias
    restored = restorer.restore(noisy).astype(float)
    assert restored[sky].mean() == pytest.approx(250, abs=1.5)
    monkeypatch.setattr(Normalization, "clip_bounds", lambda self: None)
    unaware = restorer.restore(noisy).astype(float)
    assert unaware[sky].mean() < 244


def test_block_details_are_those_noise_sigma_takes_the_median_of() -> None:
    x = _noisy(torch.full((1, 3, 31, 40), 0.9), 0.1)
    x[0, 1, 4, 7] = torch.nan
    details = block_details(x[0].permute(1, 2, 0).numpy(), UNIT)
    assert details.shape == (15, 20, 3)
    kept = details[np.isfinite(details)]
    assert 0 < kept.size < details.size  # blocks at the bound and the NaN's are left out
    lower_median = np.sort(kept)[(kept.size - 1) // 2]
    assert lower_median / 0.6745 == pytest.approx(noise_sigma(x, UNIT).item(), rel=1e-6)


@pytest.mark.parametrize("rgb", [False, True])
def test_a_planes_noise_level_is_read_over_all_its_rows(monkeypatch, rgb: bool) -> None:
    monkeypatch.setattr(pipeline, "CHUNK_VALUES", 999)  # chunks of a few rows, an even number
    shape = (37, 50, 3) if rgb else (37, 50)
    rng = np.random.default_rng(0)
    image = np.clip(np.rint(200 + rng.normal(0, 20, shape)), 0, 255).astype(np.uint8)
    layout, norm = PlaneLayout.of(image.shape), fit_normalization(image)
    reading = PlaneSource(layout, image, norm, noise=True).noise_level((), None)
    values = torch.from_numpy(norm.forward(image)).reshape(1, 37, 50, -1).permute(0, 3, 1, 2)
    assert reading == pytest.approx(noise_sigma(values, norm.clip_bounds()).item(), rel=0.02)
    assert PlaneSource(layout, image, norm).noise_level((), None) is None


def test_tiles_allow_for_clipped_noise_at_their_planes_level(monkeypatch) -> None:
    """Tiles of a bright photo whose left half is noisier than its right restore as one pass
    does: each takes its local means back through the clipping at the plane's noise level."""
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    monkeypatch.setattr(restorer.net, "forward", smoothing_forward)
    sigma = np.where(np.arange(512) < 256, 30.0, 5.0)
    noise = np.random.default_rng(0).normal(0, 1, (256, 512)) * sigma
    noisy = np.clip(np.rint(240 + noise), 0, 255).astype(np.uint8)
    whole = restorer.restore(noisy, tile=0).astype(int)
    tiled = restorer.restore(noisy, tile=128).astype(int)
    assert np.abs(tiled - whole).max() <= 1
