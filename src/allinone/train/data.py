"""Clean training images and on-the-fly degraded batches.

The training photos are all of BSD432 (disjoint from CBSD68) and DIV2K_val_crop256, plus the FMD
targets of fields of view 7–20 (microscopy); nothing from CBSD68, Set5/Set14, Urban100, Rain100H,
SOTS or FMD fields 2–6 is read. The last `validation_images` DIV2K crops are held out for
validation. Degradations are synthesised on the device, single and mixed.

Microscopy fields are stretched by their percentiles, as the Restorer scales grey planes by
default (``scaling="auto"``), so the network learns fluorescence at the contrast it will see it.
Optionally a share of each batch comes from the real noisy/clean FMD pairs of the same fields
(raw frame / 50-frame average), and from raw frames of field 19 against the mean of its other
frames: the real sensor noise that synthesis only approximates. Both images of a pair are
stretched by the noisy image's percentiles, as the Restorer stretches the only image it is
given; their label is noise (their severity is unknown and given as 0). Another share can come
from procedural fluorescence specimens under random detectors (`allinone.train.fluorescence`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from allinone.degradations import DegradedBatch, synthesize, to_8_bits
from allinone.errors import InputError
from allinone.infer.normalize import fit_normalization
from allinone.types import DEGRADATIONS

MICROSCOPY_FIELDS = range(7, 21)


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The shared data folder: `path`, else `$ALLINONE_DATA`, else `../shared/data`."""
    root = Path(path or os.environ.get("ALLINONE_DATA", "../shared/data")).expanduser()
    if not root.is_dir():
        raise InputError(f"data folder {root} not found; pass --data or set ALLINONE_DATA")
    return root


def _read(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


@dataclass
class ImageSet:
    """Clean uint8 images (H, W, 3): natural photos and microscopy fields; real microscopy pairs
    as (H, W, 2) noisy/clean arrays."""

    photos: list[np.ndarray]
    microscopy: list[np.ndarray]
    pairs: list[np.ndarray] = field(default_factory=list)


def training_paths(root: Path, validation_images: int) -> tuple[list[Path], list[Path], list[Path]]:
    """(photo paths, microscopy paths, validation paths)."""
    div2k = sorted((root / "DIV2K_val_crop256" / "clean").glob("*.png"))
    photos = sorted((root / "BSD432" / "clean").glob("*.jpg")) + div2k[:-validation_images]
    fmd = root / "FMD_Confocal_BPAE_B" / "target"
    microscopy = [fmd / f"fov{n:02d}.png" for n in MICROSCOPY_FIELDS]
    microscopy = [p for p in microscopy if p.exists()]
    if not photos:
        raise InputError(f"no training photos under {root} (BSD432/clean, DIV2K_val_crop256/clean)")
    return photos, microscopy, div2k[-validation_images:]


def real_pair_paths(root: Path) -> list[tuple[Path, Path]]:
    """(noisy, clean) FMD pairs of the training fields (7–20): raw frame, 50-frame average."""
    fmd = root / "FMD_Confocal_BPAE_B"
    pairs = [
        (fmd / "input" / f"fov{n:02d}.png", fmd / "target" / f"fov{n:02d}.png")
        for n in MICROSCOPY_FIELDS
    ]
    return [(noisy, clean) for noisy, clean in pairs if noisy.exists() and clean.exists()]


def raw_frame_pairs(root: Path, count: int) -> list[np.ndarray]:
    """`count` evenly spaced raw frames of FMD field 19 as (H, W, 2) uint8 noisy/clean pairs,
    each frame's clean image the mean of the other frames (so its noise is independent of the
    frame's), both stretched by the frame's percentiles; [] without the frames."""
    paths = sorted((root / "FMD_Confocal_BPAE_B" / "raw_frames" / "fov19").glob("*.png"))
    if count <= 0 or len(paths) < 2:
        return []
    frames = np.stack([_read(p)[:, :, 0] for p in paths]).astype(np.float64)
    total = frames.sum(axis=0)
    picks = np.linspace(0, len(frames) - 1, min(count, len(frames))).round().astype(int)
    pairs = []
    for i in picks:
        noisy = frames[i].astype(np.uint8)
        others = (total - frames[i]) / (len(frames) - 1)
        pairs.append(np.stack([stretch(noisy), stretch(others, reference=noisy)], axis=2))
    return pairs


def load_images(paths: list[Path]) -> list[np.ndarray]:
    return [_read(p) for p in paths]


def stretch(image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """A uint8 image with the 0.1 and 99.9 percentiles of `reference` (default: the image itself)
    mapped to 0 and 255 (clipped)."""
    norm = fit_normalization(image if reference is None else reference, scaling="percentile")
    return np.rint(np.clip(norm.forward(image), 0.0, 1.0) * 255.0).astype(np.uint8)


def load_microscopy(paths: list[Path]) -> list[np.ndarray]:
    return [stretch(_read(p)) for p in paths]


def load_real_pairs(pairs: list[tuple[Path, Path]]) -> list[np.ndarray]:
    """Each pair as one (H, W, 2) uint8 array, noisy then clean, both stretched by the noisy
    image's percentiles (so one crop cuts both alike)."""
    stacked = []
    for noisy_path, clean_path in pairs:
        noisy, clean = _read(noisy_path)[:, :, 0], _read(clean_path)[:, :, 0]
        if noisy.shape != clean.shape:
            raise InputError(f"{noisy_path} and {clean_path} differ in shape")
        stacked.append(np.stack([stretch(noisy), stretch(clean, reference=noisy)], axis=2))
    return stacked


class PatchSampler:
    """Random clean patches with flips and 90° rotations, deterministic given its generator."""

    def __init__(self, images: ImageSet, patch: int, microscopy_fraction: float, seed: int):
        self.images = images
        self.patch = patch
        self.microscopy_fraction = microscopy_fraction if images.microscopy else 0.0
        self.generator = torch.Generator().manual_seed(seed)

    def _crop(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        p = min(self.patch, h, w)
        y = int(torch.randint(0, h - p + 1, (1,), generator=self.generator))
        x = int(torch.randint(0, w - p + 1, (1,), generator=self.generator))
        crop = image[y : y + p, x : x + p]
        k = int(torch.randint(0, 4, (1,), generator=self.generator))
        crop = np.rot90(crop, k)
        if torch.rand(1, generator=self.generator) < 0.5:
            crop = crop[:, ::-1]
        return crop

    def _batch(self, pool: list[np.ndarray], count: int) -> torch.Tensor:
        picks = torch.randint(0, len(pool), (count,), generator=self.generator).tolist()
        crops = np.stack([self._crop(pool[i]) for i in picks])
        return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(photo patches, microscopy patches or None), uint8 scaled to [0, 1] on the CPU."""
        micro = int(round(batch_size * self.microscopy_fraction))
        photos = self._batch(self.images.photos, batch_size - micro)
        return photos, self._batch(self.images.microscopy, micro) if micro else None

    def sample_pairs(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy, clean) grey patches (count, 3, p, p) cut alike from the real pairs."""
        both = self._batch(self.images.pairs, count)
        return both[:, :1].expand(-1, 3, -1, -1), both[:, 1:].expand(-1, 3, -1, -1)

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) → (B, 1, H, W) luminance."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype)
    return (images * weights[:, None, None]).sum(dim=1, keepdim=True)


def _synthesize_grey(
    clean: torch.Tensor,
    generator: torch.Generator,
    microscopy: bool,
    weights: Mapping[str, float] | None,
):
    """Degrade one grey channel, then replicate it to three, as the Restorer feeds grey planes."""
    grey = _grey(clean)
    batch = synthesize(grey, generator, microscopy=microscopy, weights=weights)
    rgb = DegradedBatch(batch.degraded.expand(-1, 3, -1, -1), batch.labels, batch.severities)
    return grey.expand(-1, 3, -1, -1), rgb


def _real_noise(pairs: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, DegradedBatch]:
    noisy, clean = pairs
    labels = torch.zeros(noisy.shape[0], len(DEGRADATIONS), device=noisy.device)
    labels[:, DEGRADATIONS.index("noise")] = 1.0
    return clean, DegradedBatch(noisy, labels, torch.zeros_like(labels))


def _synthetic_fluorescence(
    fluorescence: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, DegradedBatch]:
    noisy, clean, severity = fluorescence
    labels = torch.zeros(noisy.shape[0], len(DEGRADATIONS), device=noisy.device)
    column = DEGRADATIONS.index("noise")
    labels[:, column] = 1.0
    severities = torch.zeros_like(labels)
    severities[:, column] = severity.to(noisy.device)
    return clean, DegradedBatch(noisy, labels, severities)


def _rounded(batch: DegradedBatch) -> DegradedBatch:
    return DegradedBatch(to_8_bits(batch.degraded), batch.labels, batch.severities)


def degrade_batch(
    photos: torch.Tensor,
    microscopy: torch.Tensor | None,
    generator: torch.Generator,
    grey_fraction: float = 0.0,
    real_pairs: tuple[torch.Tensor, torch.Tensor] | None = None,
    type_weights: Mapping[str, float] | None = None,
    round_photos: bool = False,
    fluorescence: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, DegradedBatch]:
    """Synthesise degradations for a batch; return (clean, degraded batch).

    The first `grey_fraction` of the photos and all microscopy patches are made grey and degraded
    on one channel before being replicated to three, so the network sees grey planes exactly as
    the Restorer gives them (identical channels, noise included). `real_pairs` (noisy, clean)
    join the batch as they are, labelled noise. `type_weights` weigh the degradation types drawn
    (see `synthesize`). `round_photos` rounds the degraded photos (colour and grey, not the
    microscopy) to 8 bits, as the photos the model will restore are quantised. `fluorescence`
    (noisy, clean, severity) synthetic microscopy pairs (`allinone.train.fluorescence`) join as
    they are, labelled noise at their severity.
    """
    split = int(round(photos.shape[0] * grey_fraction))
    parts = [_synthesize_grey(photos[:split], generator, False, type_weights)] if split else []
    parts.append((photos[split:], synthesize(photos[split:], generator, weights=type_weights)))
    if round_photos:
        parts = [(clean, _rounded(batch)) for clean, batch in parts]
    if microscopy is not None:
        parts.append(_synthesize_grey(microscopy, generator, True, type_weights))
    if real_pairs is not None:
        parts.append(_real_noise(real_pairs))
    if fluorescence is not None:
        parts.append(_synthetic_fluorescence(fluorescence))
    clean = torch.cat([c for c, _ in parts])
    batch = DegradedBatch(
        torch.cat([d.degraded for _, d in parts]),
        torch.cat([d.labels for _, d in parts]),
        torch.cat([d.severities for _, d in parts]),
    )
    return clean, batch
