"""Local brightness: the Restorer keeps an image's tone unless it sees haze, rain or low light,
and with percentile scaling never brightens it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import tone_free_pass

from allinone.infer.restorer import Restorer
from allinone.infer.scene import SIDE
from allinone.infer.tone import (
    READING_FLOOR,
    TONE_CHANGING,
    follow_local_mean,
    gaussian_blur,
    keep_tone_weight,
    never_brighter,
    tile_tone_changing,
)
from allinone.models.network import NetOutput
from allinone.types import DEGRADATIONS


def _logits(*present: str, batch: int = 1) -> torch.Tensor:
    """Tile-level composition logits: +10 for the names given, -10 for the others."""
    row = [10.0 if name in present else -10.0 for name in DEGRADATIONS]
    return torch.tensor([row] * batch)


def _checker(size: int) -> torch.Tensor:
    ramp = torch.arange(size)
    return ((ramp[:, None] + ramp[None, :]) % 2 * 0.2 - 0.1).expand(1, 1, size, size)


def test_blur_keeps_a_constant_and_the_mean() -> None:
    constant = torch.full((1, 3, 10, 7), 0.3)
    torch.testing.assert_close(gaussian_blur(constant), constant)
    noise = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert abs(gaussian_blur(noise).mean() - noise.mean()) < 0.01
    assert gaussian_blur(noise).std() < noise.std() / 4


def test_a_lifted_background_is_taken_off_and_detail_kept() -> None:
    degraded = torch.full((1, 1, 48, 48), 0.05)
    checker = _checker(48)
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
    monkeypatch.setattr(restorer, "tile_pass", tone_free_pass(lambda x: x + 0.2))  # brightens
    dim = np.random.default_rng(0).poisson(8.0, (64, 64)).astype(np.uint8)
    kept = restorer.restore(dim, scaling="percentile").astype(float)
    corrected = restorer.restore(dim, scaling="range").astype(float)
    assert abs(kept.mean() - dim.mean()) < 0.5
    assert corrected.mean() > dim.mean() + 40


def test_the_tone_is_kept_unless_a_tone_changing_degradation_is_seen() -> None:
    assert keep_tone_weight(_logits("noise", "blur", "downsample")).item() > 0.999
    for name in TONE_CHANGING:
        assert keep_tone_weight(_logits("noise", name)).item() < 1e-3
    both = keep_tone_weight(torch.tensor([[0.0] * len(DEGRADATIONS)]))
    assert both.shape == (1, 1, 1, 1)
    assert both.item() == pytest.approx(0.5 ** len(TONE_CHANGING))


def test_readings_at_the_heads_floor_count_as_none() -> None:
    def weight(probability: float) -> float:
        logit = math.log(probability / (1 - probability))
        return keep_tone_weight(torch.tensor([[logit] * len(DEGRADATIONS)])).item()

    assert weight(READING_FLOOR - 0.01) == 1.0
    assert weight(1 - READING_FLOOR + 0.01) == 0.0
    assert weight(0.5) == pytest.approx(0.5 ** len(TONE_CHANGING))
    assert 0.5 ** len(TONE_CHANGING) < weight(0.4) < 1.0


def test_following_the_local_mean_moves_the_tone_and_keeps_detail() -> None:
    degraded = torch.full((1, 1, 48, 48), 0.4)
    restored = degraded - 0.25 + _checker(48)  # darker ("dehazed"), with fine detail
    inner = (..., slice(12, -12), slice(12, -12))
    kept = follow_local_mean(restored, degraded, torch.ones(1, 1, 1, 1))[inner]
    torch.testing.assert_close(kept.mean(), degraded.mean(), atol=2e-3, rtol=0)
    torch.testing.assert_close(kept - kept.mean(), _checker(48)[inner], atol=2e-3, rtol=0)
    untouched = follow_local_mean(restored, degraded, torch.zeros(1, 1, 1, 1))
    torch.testing.assert_close(untouched, restored)


def _darkening(*seen: str):
    """A network forward that darkens by 0.2 and reads noise and `seen` in every tile."""

    def forward(x: torch.Tensor) -> NetOutput:
        logits = _logits("noise", *seen, batch=x.shape[0])[:, :, None, None].expand(-1, -1, 2, 2)
        return NetOutput(x - 0.2, logits, [])

    return forward


@pytest.mark.parametrize(("seen", "shifted"), [((), False), (("haze",), True)])
def test_the_restorer_keeps_the_tone_of_what_it_reads_as_tone_preserving(
    monkeypatch, seen: tuple[str, ...], shifted: bool
) -> None:
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    monkeypatch.setattr(restorer.net, "forward", _darkening(*seen))
    image = np.random.default_rng(0).integers(60, 200, (64, 64)).astype(np.uint8)
    restored = restorer.restore(image, scaling="range").astype(float)
    change = image.mean() - restored.mean()
    assert change > 40 if shifted else abs(change) < 1


def test_where_haze_is_judged_at_scene_scale_a_tiles_haze_frees_nothing() -> None:
    assert tile_tone_changing(scene_haze=False) == TONE_CHANGING
    assert tile_tone_changing(scene_haze=True) == ("rain", "low_light")
    for name in ("rain", "low_light"):
        assert keep_tone_weight(_logits(name), tile_tone_changing(True)).item() < 1e-3
    assert keep_tone_weight(_logits("haze"), tile_tone_changing(True)).item() > 0.999


@pytest.mark.parametrize(
    ("shape", "scene_haze", "shifted"),
    [
        ((SIDE + 40, SIDE + 40, 3), True, False),
        ((SIDE + 40, SIDE + 40, 3), False, True),
        ((SIDE, SIDE, 3), True, True),
        ((SIDE + 40, SIDE + 40), True, True),
    ],
    ids=["colour-with-overview", "scene-haze-off", "colour-without-overview", "grey"],
)
def test_a_tiles_haze_frees_its_tone_only_where_no_overview_judges_haze(
    monkeypatch, haze_pass, shape: tuple[int, ...], scene_haze: bool, shifted: bool
) -> None:
    """Tiles read haze; the overview (where a colour plane has one) is sure there is none."""
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    monkeypatch.setattr(restorer.net, "forward", _darkening("haze"))
    monkeypatch.setattr(restorer, "overview_pass", haze_pass(-50.0))
    image = np.random.default_rng(0).integers(60, 200, shape).astype(np.uint8)
    restored = restorer.restore(image, scaling="range", scene_haze=scene_haze).astype(float)
    change = image.mean() - restored.mean()
    assert change > 40 if shifted else abs(change) < 1
