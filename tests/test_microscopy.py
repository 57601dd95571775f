"""Synthetic fluorescence microscopy: scene families, optics, the detector and training pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allinone.infer.normalize import fit_normalization
from allinone.microscopy import (
    FAMILIES,
    HELD_OUT_BITS,
    HELD_OUT_FAMILIES,
    TRAINING_BITS,
    TRAINING_FAMILIES,
    Detector,
    draw_detector,
    draw_optics,
    expose,
    image,
    scene,
    stack_detectors,
)
from allinone.microscopy.optics import Optics, blur
from allinone.train.fluorescence import FluorescencePool


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("shape", [(96, 80), (6, 48, 40)])
def test_every_family_draws_a_seeded_structured_density(name: str, shape) -> None:
    first = FAMILIES[name](np.random.default_rng(3), shape)
    again = FAMILIES[name](np.random.default_rng(3), shape)
    other = FAMILIES[name](np.random.default_rng(4), shape)
    assert first.shape == shape and first.dtype == np.float32
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert first.min() >= 0 and np.isfinite(first).all()
    assert np.percentile(first, 99.95) == pytest.approx(1.0, rel=1e-3)  # brightest structure at 1
    assert first.std() > 0.02  # structure, not a flat field


def test_held_out_families_and_depths_are_never_trained_on() -> None:
    assert set(HELD_OUT_FAMILIES).isdisjoint(TRAINING_FAMILIES)
    assert set(HELD_OUT_FAMILIES) | set(TRAINING_FAMILIES) == set(FAMILIES)
    assert set(HELD_OUT_BITS).isdisjoint(TRAINING_BITS)
    drawn = {draw_detector(np.random.default_rng(seed)).bits for seed in range(40)}
    assert drawn == set(TRAINING_BITS)


def test_scene_refuses_unknown_families() -> None:
    with pytest.raises(ValueError, match="unknown scene families"):
        scene(np.random.default_rng(0), (32, 32), ["nuclei", "bacteria"])


def test_the_axial_psf_is_wider_in_stacks() -> None:
    optics = Optics("confocal", 1.0, 3.0, 0.0, 8.0, 0.0)
    point = np.zeros((21, 21, 21), np.float32)
    point[10, 10, 10] = 1
    spread = blur(point, optics)
    axial, lateral = spread[:, 10, 10], spread[10, 10, :]
    assert axial[7] > lateral[7] > 0  # 3 pixels off along Z keeps more light than across


def test_widefield_adds_more_out_of_focus_light_than_confocal() -> None:
    def background(kind: str) -> float:
        rng = np.random.default_rng(1)
        floors = []
        for _ in range(6):
            optics = draw_optics(rng, kind)
            floors.append(np.percentile(image(rng, (64, 64), optics, ["puncta"]), 20))
        return float(np.mean(floors))

    assert background("widefield") > background("confocal")


def test_exposure_is_unbiased_against_its_clean_reference() -> None:
    density = torch.full((400, 1, 8, 8), 0.5)
    detector = Detector(photons=20.0, gain=3.0, offset=10.0, read_noise=1.0, bits=8)
    noisy, clean = expose(density, detector, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, noisy.round()) and noisy.min() >= 0 and noisy.max() <= 255
    assert clean.mean().item() == pytest.approx(10 + 3 * 10, rel=1e-4)
    assert noisy.mean().item() == pytest.approx(clean.mean().item(), abs=0.15)
    expected_variance = 3.0**2 * (10 + 1.0**2) + 1 / 12  # shot + read, and rounding
    assert noisy.var().item() == pytest.approx(expected_variance, rel=0.05)


def test_a_multiplying_stage_doubles_the_shot_noise() -> None:
    density = torch.full((400, 1, 8, 8), 1.0)
    plain = Detector(photons=50.0, gain=1.0, offset=0.0, read_noise=0.0, bits=16)
    multiplied = Detector(
        photons=50.0, gain=1.0, offset=0.0, read_noise=0.0, bits=16, multiplying=1
    )
    ratio = (
        expose(density, multiplied, torch.Generator().manual_seed(0))[0].var()
        / expose(density, plain, torch.Generator().manual_seed(0))[0].var()
    )
    assert ratio.item() == pytest.approx(2.0, rel=0.08)


def test_saturation_and_the_dark_floor_clip_noisy_and_clean_alike() -> None:
    density = torch.cat([torch.zeros(200, 1, 4, 4), torch.ones(200, 1, 4, 4)])
    detector = Detector(photons=100.0, gain=4.0, offset=0.0, read_noise=2.0, bits=8)
    noisy, clean = expose(density, detector, torch.Generator().manual_seed(0))
    dark, bright = slice(0, 200), slice(200, 400)
    assert noisy[bright].max() == 255 and clean[bright].max() <= 255
    assert clean[bright].mean() == pytest.approx(noisy[bright].mean().item(), abs=0.5)
    assert clean[dark].mean() > 0  # read noise clipped at 0 raises the dark level
    assert clean[dark].mean() == pytest.approx(noisy[dark].mean().item(), abs=0.3)


def test_detectors_cover_the_photon_budgets_and_batch() -> None:
    rng = np.random.default_rng(0)
    drawn = [draw_detector(rng, bits=(16,)) for _ in range(200)]
    photons = np.array([d.photons for d in drawn])
    assert photons.min() < 3 and photons.max() > 300
    assert all(d.gain > 0 and d.dtype == np.uint16 for d in drawn)
    batch = stack_detectors(drawn[:5])
    assert batch.bits == 16 and batch.photons.shape == (5,)
    noisy, _ = expose(torch.rand(5, 1, 8, 8), batch, torch.Generator().manual_seed(0))
    assert noisy.shape == (5, 1, 8, 8)
    with pytest.raises(ValueError, match="one depth"):
        stack_detectors([drawn[0], draw_detector(rng, bits=(8,))])
    severities = torch.stack([d.severity() for d in drawn])
    assert severities.min() >= 0 and severities.max() <= 1
    assert np.corrcoef(np.log(photons), severities.numpy())[0, 1] < -0.99


def test_pool_pairs_are_scaled_as_restore_scales_the_noisy_plane() -> None:
    pool = FluorescencePool(3, 64, seed=0)
    detector = Detector(photons=30.0, gain=2.0, offset=5.0, read_noise=0.5, bits=16)
    noisy, clean = pool._expose(1, detector, torch.Generator().manual_seed(0))
    density = torch.from_numpy(pool.planes[1])[None, None]
    raw, _ = expose(density, detector, torch.Generator().manual_seed(0))
    norm = fit_normalization(raw[0, 0].numpy().astype(np.uint16), scaling="percentile")
    counts = norm.inverse(noisy)  # back through the normalisation a restore fits
    assert np.array_equal(counts, raw[0, 0].numpy().astype(np.uint16))
    assert np.percentile(noisy, 0.1) == pytest.approx(0, abs=1e-6)
    assert np.percentile(noisy, 99.9) == pytest.approx(1, abs=1e-6)
    assert np.abs(clean - noisy).mean() < np.abs(noisy - noisy.mean()).mean()


def test_pool_samples_are_deterministic_grey_pairs() -> None:
    pool = FluorescencePool(4, 64, seed=1)
    first = pool.sample(3, 32, torch.Generator().manual_seed(5))
    again = pool.sample(3, 32, torch.Generator().manual_seed(5))
    noisy, clean, severity = first
    assert noisy.shape == clean.shape == (3, 3, 32, 32) and severity.shape == (3,)
    assert torch.equal(noisy[:, 0], noisy[:, 2])  # grey, replicated as restore feeds it
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(noisy, clean)
