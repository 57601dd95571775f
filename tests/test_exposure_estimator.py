"""The exposure estimator: its training samples, deterministic training, files and CLI."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from safetensors import safe_open

from allinone.cli import main
from allinone.loading import load_estimator
from allinone.models.exposure import OVERVIEW, ExposureNet, overview_of, save_estimator
from allinone.train.exposure import exposure_batch, train_estimator, validation_set


def photos(count: int = 4, side: int = 96, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side]
    images = []
    for _ in range(count):
        base = np.sin(x / rng.uniform(3, 9)) * np.cos(y / rng.uniform(3, 9)) * 90 + 130
        noise = rng.normal(0, 10, (side, side, 3))
        images.append(np.clip(base[..., None] + noise, 0, 255).astype(np.uint8))
    return images


def test_the_overview_is_block_means_with_a_bounded_long_side() -> None:
    image = torch.rand(1, 3, 200, 130)
    view = overview_of(image)
    assert view.shape == (1, 3, 50, 33)  # blocks of 4, the last column partial
    assert max(view.shape[-2:]) <= OVERVIEW
    assert torch.allclose(view[0, :, 0, 0], image[0, :, :4, :4].mean(dim=(1, 2)))
    assert torch.allclose(view[0, :, 0, -1], image[0, :, :4, 128:].mean(dim=(1, 2)))


def test_samples_are_darkened_versions_of_their_targets_or_unchanged() -> None:
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    inputs, targets = exposure_batch(photos(), 64, rng, generator)
    assert inputs.shape == targets.shape and inputs.shape[:2] == (64, 3)
    assert max(inputs.shape[-2:]) <= OVERVIEW
    assert float(inputs.min()) >= 0 and float(inputs.max()) <= 1
    ratio = inputs.mean(dim=(1, 2, 3)) / targets.mean(dim=(1, 2, 3))
    darkened = ratio < 0.9
    assert 0.4 < float(darkened.float().mean()) < 0.8
    assert torch.all(ratio[~darkened] > 0.97)  # 8-bit rounding of noise and rain aside


def test_training_is_deterministic_and_learns_to_brighten() -> None:
    images = photos()
    val = validation_set(images[:2], repeats=8)
    first = train_estimator(images, val, steps=60, batch_size=8, seed=3)
    second = train_estimator(images, val, steps=60, batch_size=8, seed=3)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    dark = torch.from_numpy(images[0].transpose(2, 0, 1) / 255.0).float()[None] * 0.25
    curve = first.curve(overview_of(dark))
    assert curve.stops(float(dark.mean())) > 0.5


def test_an_estimator_round_trips_through_safetensors(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = ExposureNet().eval()
    path = save_estimator(net, tmp_path / "estimator", {"steps": 1})
    assert path.suffix == ".safetensors"
    loaded = load_estimator(path)
    view = torch.rand(1, 3, 40, 64)
    assert loaded.curve(view) == net.curve(view)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["training"] == '{"steps": 1}'


def test_the_shipped_estimator_loads() -> None:
    curve = load_estimator().curve(torch.full((1, 3, 32, 32), 0.5))
    assert 0 < curve.scale <= 1 and curve.gamma >= 1


def test_the_cli_trains_an_estimator(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for folder, suffix, count in (("BSD432", "jpg", 3), ("DIV2K_val_crop256", "png", 10)):
        (tmp_path / folder / "clean").mkdir(parents=True)
        for i, image in enumerate(photos(count, seed=len(folder))):
            iio.imwrite(tmp_path / folder / "clean" / f"{i:04d}.{suffix}", image)
    out = tmp_path / "estimator.safetensors"
    args = ["train-exposure", "--data", str(tmp_path), "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    assert "step 2 loss=" in capsys.readouterr().err
    assert load_estimator(out).curve(torch.rand(1, 3, 16, 16)).scale > 0
