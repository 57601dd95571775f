"""Training the exposure estimator (`allinone.models.exposure`) on the training photos.

Each sample is a crop of a training photo (BSD432, DIV2K less its validation crops), flipped at
random. Half of the crops first get another degradation (noise, blur, haze, rain or
downsampling, at a random severity), so that the estimator learns them as no reason to brighten;
`DARK_FRACTION` of them are then darkened as ``scale * x ** gamma`` (scale log-uniform in
`SCALES`, gamma from 1 to `MAX_GAMMA`, more often near 1) and, unless left noise-free
(`NOISELESS`), given the photon noise of the training sampler's low light; all are rounded to 8
bits. The loss is the L1 distance between the overview undone by the estimated curve and the
overview before the darkening: a crop that was not darkened asks for no change.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from allinone.degradations import apply, low_light, poisson_gaussian_noise, to_8_bits
from allinone.models.exposure import ExposureNet, curve_parameters, overview_of, undo_curve
from allinone.train.data import load_images, training_paths

DARK_FRACTION = 0.6
SCALES = (0.08, 0.85)
MAX_GAMMA = 3.5
NOISELESS = 0.35
OTHER_FRACTION = 0.5
OTHERS = ("noise", "blur", "haze", "rain", "downsample")
VALIDATION_IMAGES = 8
CROP = (128, 256)
"""Smallest and largest crop side (multiples of 4), at most the smallest photo's side."""


@dataclass
class ExposureRecord:
    """One line of the estimator's training log."""

    step: int
    loss: float
    val_psnr: float | None = None


def _crops(
    photos: list[np.ndarray], count: int, rng: np.random.Generator, size: int | None
) -> torch.Tensor:
    """(count, 3, h, w) float crops of random photos, flipped; `size` a side, else one random
    size per batch; never larger than the smallest photo."""
    largest = min(min(photo.shape[:2]) for photo in photos)
    h, w = (size or 4 * int(rng.integers(CROP[0] // 4, CROP[1] // 4 + 1)) for _ in range(2))
    h, w = min(h, largest), min(w, largest)
    crops = []
    for index in rng.integers(len(photos), size=count):
        photo = photos[index]
        if rng.random() < 0.5:
            photo = photo.transpose(1, 0, 2)
        y = int(rng.integers(photo.shape[0] - h + 1))
        x = int(rng.integers(photo.shape[1] - w + 1))
        crop = photo[y : y + h, x : x + w]
        crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
    batch = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    return torch.from_numpy(batch)


def _other(x: torch.Tensor, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
    """Each image under one of `OTHERS` (before darkening; noise after it) or as it was."""
    out = x.clone()
    for i in range(x.shape[0]):
        if rng.random() < OTHER_FRACTION:
            name = OTHERS[int(rng.integers(len(OTHERS)))]
            out[i : i + 1] = apply(x[i : i + 1], name, float(rng.random()), generator)
    return out


def _darken(x: torch.Tensor, rng: np.random.Generator, generator: torch.Generator) -> torch.Tensor:
    """`DARK_FRACTION` of the images darkened (with photon noise unless `NOISELESS`), all rounded
    to 8 bits."""
    out = x.clone()
    for i in range(x.shape[0]):
        if rng.random() >= DARK_FRACTION:
            continue
        scale = math.exp(rng.uniform(math.log(SCALES[0]), math.log(SCALES[1])))
        gamma = 1 + (MAX_GAMMA - 1) * rng.random() ** 2
        dark = low_light(x[i : i + 1], gamma, scale, generator, photons=None)
        if rng.random() >= NOISELESS:
            severity = rng.random()
            photons, read = 10 ** (3.3 - 0.8 * severity), (0.5 + 2 * severity) / 255
            dark = poisson_gaussian_noise(dark, photons, read, generator)
        out[i : i + 1] = dark
    return to_8_bits(out)


def exposure_batch(
    photos: list[np.ndarray],
    count: int,
    rng: np.random.Generator,
    generator: torch.Generator,
    size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input overviews, target overviews) of `count` samples (see the module docstring) of
    crops `size` a side (default: random)."""
    clean = _crops(photos, count, rng, size)
    degraded = _other(clean, rng, generator)
    return overview_of(_darken(degraded, rng, generator)), overview_of(degraded)


def _psnr(estimate: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB) of the whole set: its mean squared error over all samples."""
    return float(-10 * torch.log10(((estimate.clamp(0, 1) - target) ** 2).mean()))


def train_estimator(
    photos: list[np.ndarray],
    validation: tuple[torch.Tensor, torch.Tensor],
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    on_record: Callable[[ExposureRecord], None] | None = None,
    every: int = 100,
) -> ExposureNet:
    """An `ExposureNet` trained for `steps` (AdamW, cosine schedule) on `exposure_batch`es of
    `photos` (uint8 (H, W, 3)); `validation` is a fixed (inputs,
    targets) pair of overviews whose PSNR after undoing is recorded every `every` steps.
    Deterministic given `seed`."""
    torch.manual_seed(seed)
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    net = ExposureNet()
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    for step in range(1, steps + 1):
        inputs, targets = exposure_batch(photos, batch_size, rng, generator)
        scale, gamma = curve_parameters(net(inputs))
        loss = (undo_curve(inputs, scale, gamma) - targets).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if on_record is not None and (step % every == 0 or step == steps):
            on_record(ExposureRecord(step, loss.item(), validation_psnr(net, *validation)))
    return net.eval()


def validation_psnr(net: ExposureNet, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """PSNR (dB) of the validation overviews undone by `net`'s curves."""
    with torch.inference_mode():
        scale, gamma = curve_parameters(net(inputs))
        return _psnr(undo_curve(inputs, scale, gamma), targets)


def validation_set(photos: list[np.ndarray], repeats: int = 8, seed: int = 1) -> tuple:
    """Fixed (inputs, targets) overviews: `repeats` random samples of each validation photo."""
    rng, generator = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    batches = [exposure_batch([photo], repeats, rng, generator, CROP[1]) for photo in photos]
    return tuple(torch.cat([b[k] for b in batches]) for k in (0, 1))


def train_from_data(
    root: Path,
    steps: int,
    seed: int = 0,
    on_record: Callable[[ExposureRecord], None] | None = None,
) -> tuple[ExposureNet, dict]:
    """An estimator trained on the training photos under `root` (the restoration training's
    split: its 8 validation crops validate), and the record of how it was trained."""
    photos, _, validation = training_paths(root, VALIDATION_IMAGES)
    val = validation_set(load_images(validation))
    net = train_estimator(load_images(photos), val, steps, seed=seed, on_record=on_record)
    training = {
        "steps": steps,
        "seed": seed,
        "photos": len(photos),
        "val_psnr_input": round(_psnr(*val), 2),
        "val_psnr": round(validation_psnr(net, *val), 2),
    }
    return net, training
