"""Quality benchmark: the evaluation protocols, classical baselines and the Markdown report.

Every protocol measures the model and its baselines on the same images in the same run. All
images are 8-bit; PSNR and SSIM are computed on uint8 RGB (or grey) arrays with `data_range=255`.

- denoise: CBSD68, top-left crop to a multiple of 16, Gaussian noise of sigma 15/25/50 added in
  uint8 space, rounded and clipped (`numpy.random.default_rng(index)` for the image at `index`);
  baselines: the noisy input, CBM3D with the true sigma (NL-means when `bm3d` is missing).
- derain: Rain100H (53 pairs here); baseline: the input.
- dehaze: SOTS-indoor (25 pairs here); baselines: the input, the dark channel prior.
- hazephotos: CBSD68 under atmospheric scattering with a depth map unlike the training one's
  (`add_scene_haze`: a vertical ramp plus the inverted, blurred luminance; beta in [0.8, 2] and a
  grey airlight in [0.8, 1], seeded by the image's index); baselines: the input, the dark channel
  prior.
- sr: Set5, Set14, Urban100 crops, x2 and x4. HR is cropped to a multiple of the scale, LR made
  with Pillow's antialiased bicubic, and the model restores LR upsampled back with Pillow's
  bicubic (the bicubic baseline). Also Y-channel PSNR with a `scale`-pixel border shaved.
- deblur: CBSD68 with a seeded camera-shake kernel (`motion_kernel`, length 15 px);
  baseline: Richardson-Lucy with the true kernel.
- lowlight: CBSD68 under `low_light` at severity 0.5 of the training sampler (its largest
  gamma, with photon noise), and CBSD68 3 stops under-exposed in linear light with no noise
  (`underexpose`), both restored as any other image (``scaling="auto"``, which undoes the
  darkening the exposure estimator reads in a colour photo, `allinone.infer.auto_exposure`);
  baseline: CLAHE.
- fmd: real confocal noise, FMD BPAE_B fields 2-6 (8-bit).
- fluorescence: procedural microscopy of the families and the detector depth held out of
  training (`allinone.microscopy`: mitochondria and tissue, 12-bit counts in uint16, photon
  budgets of 1 to 1,000 at the brightest pixel), `FLUORESCENCE_IMAGES` planes seeded apart from
  training's validation; PSNR and SSIM on the counts mapped from the clean plane's range to 0-255.
  Microscopy baselines of both (`allinone.microscopy_baselines`): the input; TV and BM3D with
  the noise estimated blind; TV and BM3D tuned per image against the truth (an oracle, marked);
  an untrained network of the default's size trained on the image alone (self-supervised) for
  `--adapt-seconds`; and after the model, the model adapted to the image for as long.
- composition: `Restorer.analyze` (flip-averaged, its default) on 256x256 CBSD68 crops with single
  degradations (each type at three severities) and with seeded mixtures of 2-3 types: top-1
  accuracy, ROC AUC per type, exact-set accuracy at probability 0.5.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from skimage import color, exposure, restoration
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from allinone import microscopy_baselines as mb
from allinone.degradations import apply, apply_kernel, low_light, motion_kernel, synthesize
from allinone.degradations.composition_set import (
    COMPOSITION_CROP,
    COMPOSITION_SEVERITIES,
    MIXTURES_PER_IMAGE,
    crop_centre,
)
from allinone.errors import InputError
from allinone.infer.restorer import Restorer
from allinone.microscopy import (
    HELD_OUT_BITS,
    HELD_OUT_FAMILIES,
    acquire,
    draw_detector,
    draw_optics,
    image,
)
from allinone.types import DEGRADATIONS

TASKS: tuple[str, ...] = (
    "denoise",
    "derain",
    "dehaze",
    "hazephotos",
    "sr",
    "deblur",
    "lowlight",
    "fmd",
    "fluorescence",
    "composition",
)
SIGMAS: tuple[int, ...] = (15, 25, 50)
SR_SETS: tuple[str, ...] = ("Set5", "Set14", "Urban100_crop256_50")
SR_SCALES: tuple[int, ...] = (2, 4)
FMD_FIELDS = range(2, 7)
FLUORESCENCE_IMAGES = 8
FLUORESCENCE_SIZE = 256
FLUORESCENCE_SEED = 31
"""Seeds the held-out planes; training validates on others (`train.loop.held_out_fluorescence`)."""
ADAPT_SECONDS = 60.0
BLUR_LENGTH = 15.0
"""Camera-shake path length in pixels (severity 0.5 of the training sampler)."""
RL_ITERATIONS = 30
LOW_LIGHT = {"gamma": 2.5, "scale": 0.375, "photons": 10**2.9, "read_sigma": 1.5 / 255}
"""`low_light` parameters: severity 0.5 of the training sampler, at its largest gamma."""
EXPOSURE_STOPS = 3
"""Under-exposure of the second low-light protocol, in stops of linear light."""
HAZE_BETA = (0.8, 2.0)
HAZE_AIRLIGHT = (0.8, 1.0)
THRESHOLD = 0.5

Log = Callable[[str], None]


# --- results --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One method's mean scores on one task."""

    method: str
    psnr: float
    ssim: float | None
    images: int
    kind: str = "baseline"
    """"model", "adapted" (the model adapted to each image), "baseline", "oracle" (a baseline
    tuned against the truth) or "published" (a paper's number, not measured here)."""
    psnr_y: float | None = None
    """Y-channel PSNR with a border shaved (super-resolution only)."""
    seconds: float | None = None
    """Mean seconds per image."""
    note: str = ""
    per_image: list[float] = field(default_factory=list)
    """PSNR of each image, in the task's order."""


@dataclass
class TaskResult:
    """The rows of one table: the model, the baselines and the published references."""

    key: str
    title: str
    rows: list[Row]
    references: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def model_row(self) -> Row | None:
        return self.row_of("model")

    def row_of(self, kind: str, label: str = "") -> Row | None:
        """The first row of `kind` whose method contains `label`."""
        return next((r for r in self.rows if r.kind == kind and label in r.method), None)

    def best_baseline(self) -> Row | None:
        baselines = [row for row in self.rows if row.kind == "baseline"]
        return max(baselines, key=lambda row: row.psnr, default=None)


@dataclass
class CompositionResult:
    """How well `Restorer.analyze` names the degradations of synthetic images."""

    single_count: int
    single_top1: float
    single_top1_per_type: dict[str, float]
    single_auc: dict[str, float]
    single_confusion: dict[str, dict[str, int]]
    mixture_count: int
    mixture_auc: dict[str, float]
    mixture_exact: float

    @property
    def mixture_mean_auc(self) -> float:
        return float(np.nanmean(list(self.mixture_auc.values())))


@dataclass
class Goal:
    """A target from the issue, with whether this run met it (None: not measured)."""

    text: str
    met: bool | None
    detail: str


@dataclass
class Report:
    """Everything one `allinone eval` run measured, and how to reproduce it."""

    meta: dict[str, str]
    tasks: list[TaskResult]
    composition: CompositionResult | None
    goals: list[Goal]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=True)


# --- metrics ---------------------------------------------------------------------------------


def psnr(clean: np.ndarray, restored: np.ndarray) -> float:
    """PSNR in dB of 8-bit images."""
    return float(peak_signal_noise_ratio(clean, restored, data_range=255))


def ssim(clean: np.ndarray, restored: np.ndarray) -> float:
    """SSIM of 8-bit grey (H, W) or RGB (H, W, 3) images."""
    channel_axis = 2 if clean.ndim == 3 else None
    return float(structural_similarity(clean, restored, channel_axis=channel_axis, data_range=255))


def luma(image: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 Y in [16, 235] of an 8-bit RGB image, as float (the SR convention)."""
    rgb = image.astype(np.float64) / 255
    return 16 + rgb @ np.array([65.481, 128.553, 24.966])


def psnr_y(clean: np.ndarray, restored: np.ndarray, shave: int) -> float:
    """Y-channel PSNR with `shave` pixels cut from every border."""
    inner = (slice(shave, -shave or None), slice(shave, -shave or None))
    return float(peak_signal_noise_ratio(luma(clean)[inner], luma(restored)[inner], data_range=255))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula, ties averaged.

    NaN when `labels` holds only one class.
    """
    positive = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = np.unique(np.asarray(scores), return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2)[inverse.reshape(-1)]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- images and degradations -----------------------------------------------------------------


def read_rgb(path: Path) -> np.ndarray:
    """An 8-bit image as (H, W, 3); grey is replicated."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def read_grey(path: Path) -> np.ndarray:
    """An 8-bit grey image as (H, W)."""
    import imageio.v3 as iio

    image = np.asarray(iio.imread(path))
    return image if image.ndim == 2 else image[:, :, 0]


def crop_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Top-left crop to height and width multiples of `multiple`."""
    h, w = image.shape[:2]
    return image[: h - h % multiple, : w - w % multiple]


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] to uint8, rounded and clipped."""
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255


def _from_tensor(x: torch.Tensor) -> np.ndarray:
    return to_uint8(x[0].permute(1, 2, 0).numpy())


def add_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """The papers' protocol: Gaussian noise added in uint8 space, rounded and clipped."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(image + rng.normal(0, sigma, image.shape)), 0, 255).astype(np.uint8)


def bicubic_pair(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of `scale`, its Pillow-bicubic LR resized back to HR size)."""
    hr = crop_multiple(hr, scale)
    h, w = hr.shape[:2]
    low = Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC)
    return hr, np.asarray(low.resize((w, h), Image.BICUBIC))


def motion_blur(image: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(the image blurred by a seeded camera-shake kernel, that kernel)."""
    kernel = motion_kernel(BLUR_LENGTH, torch.Generator().manual_seed(seed))[0]
    return _from_tensor(apply_kernel(_to_tensor(image), kernel)), kernel.numpy()


def add_scene_haze(image: np.ndarray, seed: int) -> np.ndarray:
    """An 8-bit colour image under I = J t + A (1 - t), t = exp(-beta * depth), with a depth
    map unlike the training one's: 0.6 x a vertical ramp (1 at the top, 0.2 at the bottom) plus
    0.4 x the inverted luminance blurred by a 15-pixel Gaussian (bright things near); beta in
    `HAZE_BETA` and the grey airlight A in `HAZE_AIRLIGHT`, drawn from `seed`."""
    rng = np.random.default_rng(seed)
    beta, airlight = rng.uniform(*HAZE_BETA), rng.uniform(*HAZE_AIRLIGHT)
    clean = image.astype(np.float64) / 255
    ramp = np.linspace(1.0, 0.2, clean.shape[0])[:, None]
    luminance = color.rgb2gray(clean)
    depth = 0.6 * ramp + 0.4 * ndimage.gaussian_filter(1 - luminance, 15, mode="nearest")
    transmission = np.exp(-beta * depth)[..., None]
    return to_uint8(clean * transmission + airlight * (1 - transmission))


def srgb_to_linear(values: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve undone: [0, 1] encoded values to linear light."""
    return np.where(values <= 0.04045, values / 12.92, ((values + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(values: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] encoded with the sRGB transfer curve."""
    return np.where(values <= 0.0031308, 12.92 * values, 1.055 * values ** (1 / 2.4) - 0.055)


def underexpose(image: np.ndarray, stops: float = EXPOSURE_STOPS) -> np.ndarray:
    """An 8-bit sRGB photo taken `stops` stops darker: linear light divided by 2**stops and
    encoded again, with no noise (a camera that denoised its dark frame)."""
    linear = srgb_to_linear(image / 255.0) / 2**stops
    return to_uint8(linear_to_srgb(linear))


def darken(image: np.ndarray, seed: int) -> np.ndarray:
    """The image under `low_light` with the fixed `LOW_LIGHT` parameters."""
    generator = torch.Generator().manual_seed(seed)
    return _from_tensor(low_light(_to_tensor(image), generator=generator, **LOW_LIGHT))


# --- classical baselines ---------------------------------------------------------------------


def classical_denoiser_name(grey: bool = False) -> str:
    """The label of the classical denoiser this installation runs."""
    if mb.bm3d_module() is None:
        return "NL-means (skimage; bm3d not installed)"
    return "BM3D" if grey else "CBM3D"


def denoise_classical(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """(C)BM3D with noise sigma `sigma` (8-bit units) or, without `bm3d`, NL-means."""
    bm3d = mb.bm3d_module()
    x, s = noisy / 255.0, sigma / 255.0
    if bm3d is not None:
        return to_uint8(bm3d.bm3d_rgb(x, s) if noisy.ndim == 3 else bm3d.bm3d(x, s))
    channel_axis = 2 if noisy.ndim == 3 else None
    return to_uint8(
        restoration.denoise_nl_means(
            x, h=0.8 * s, sigma=s, patch_size=5, patch_distance=6, channel_axis=channel_axis
        )
    )


def richardson_lucy(blurred: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Richardson-Lucy per channel with the true kernel.

    The image is padded symmetrically by twice the kernel size, so that the zero boundary of
    `skimage`'s convolutions does not leak into the image over the iterations.
    """
    pad = 2 * kernel.shape[0]
    x = np.pad(blurred / 255.0, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    channels = [
        restoration.richardson_lucy(x[:, :, c], kernel, num_iter=RL_ITERATIONS) for c in range(3)
    ]
    return to_uint8(np.stack(channels, axis=2)[pad:-pad, pad:-pad])


def clahe(image: np.ndarray) -> np.ndarray:
    """CLAHE on the HSV value channel (`skimage.exposure.equalize_adapthist` defaults)."""
    return to_uint8(exposure.equalize_adapthist(image))


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    return ndimage.uniform_filter(x, size=2 * radius + 1, mode="reflect")


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s grey guided filter (box windows of the given radius)."""
    mean_g, mean_s = _box(guide, radius), _box(source, radius)
    var_g = _box(guide * guide, radius) - mean_g**2
    a = (_box(guide * source, radius) - mean_g * mean_s) / (var_g + eps)
    b = mean_s - a * mean_g
    return _box(a, radius) * guide + _box(b, radius)


def dark_channel_prior(hazy: np.ndarray, patch: int = 15, omega: float = 0.95) -> np.ndarray:
    """He et al.'s dark channel prior dehazing, with a guided-filter refined transmission."""
    x = hazy / 255.0
    dark = ndimage.minimum_filter(x.min(axis=2), size=patch)
    brightest = np.argsort(dark.ravel())[-max(1, dark.size // 1000) :]
    candidates = x.reshape(-1, 3)[brightest]
    air = candidates[candidates.sum(axis=1).argmax()].clip(1e-3, 1)
    coarse = 1 - omega * ndimage.minimum_filter((x / air).min(axis=2), size=patch)
    transmission = guided_filter(x.mean(axis=2), coarse, radius=60, eps=1e-4)
    clear = (x - air) / np.maximum(transmission, 0.1)[:, :, None] + air
    return to_uint8(clear)


# --- running the protocols -------------------------------------------------------------------


@dataclass
class Sample:
    """A clean image, its degraded version and what a baseline may know about it."""

    name: str
    clean: np.ndarray
    degraded: np.ndarray
    sigma: float = 0.0
    kernel: np.ndarray | None = None
    span: tuple[float, float] | None = None
    """Counts (low, high) mapped to 0-255 before scoring; None: already 8-bit."""

    def scored(self, image: np.ndarray) -> np.ndarray:
        """`image` on the 0-255 scale the metrics use."""
        if self.span is None:
            return image
        low, high = self.span
        return (np.asarray(image, np.float64) - low) * (255.0 / (high - low))


Method = tuple[str, str, Callable[[Sample], np.ndarray]]
"""(label, kind, restore function)."""


@dataclass
class _Meter:
    method: str
    kind: str
    shave: int | None
    psnr: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    psnr_y: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, sample: Sample, restored: np.ndarray, seconds: float) -> None:
        clean, restored = sample.scored(sample.clean), sample.scored(restored)
        self.psnr.append(psnr(clean, restored))
        self.ssim.append(ssim(clean, restored))
        if self.shave is not None:
            self.psnr_y.append(psnr_y(clean, restored, self.shave))
        self.seconds += seconds

    def row(self) -> Row:
        n = len(self.psnr)
        return Row(
            method=self.method,
            psnr=float(np.mean(self.psnr)),
            ssim=float(np.mean(self.ssim)),
            images=n,
            kind=self.kind,
            psnr_y=float(np.mean(self.psnr_y)) if self.psnr_y else None,
            seconds=self.seconds / max(n, 1),
            per_image=[round(value, 3) for value in self.psnr],
        )


@dataclass
class Context:
    """What every protocol needs: the model, the data and the options."""

    restorer: Restorer
    root: Path
    limit: int | None = None
    baselines: bool = True
    log: Log = lambda message: None
    ensemble: bool = False
    adapt_seconds: float = ADAPT_SECONDS
    """Seconds of self-supervised training per image in the microscopy tasks (0: none)."""

    def files(self, folder: str, pattern: str = "*.png") -> list[Path]:
        paths = sorted((self.root / folder).glob(pattern))
        if not paths:
            raise InputError(f"no {pattern} images in {self.root / folder}")
        return paths[: self.limit]

    def pairs(self, folder: str) -> list[tuple[Path, Path]]:
        inputs = self.files(f"{folder}/input")
        return [(path, self.root / folder / "target" / path.name) for path in inputs]

    def model(self) -> Method:
        name = f"{self.restorer.card.name} (ours{', 8-view ensemble' if self.ensemble else ''})"
        axes = {2: "YX", 3: "YXC"}

        def restore(sample: Sample) -> np.ndarray:
            layout = axes[sample.clean.ndim]
            return self.restorer.restore(sample.degraded, axes=layout, ensemble=self.ensemble)

        return name, "model", restore

    def methods(self, input_label: str, *baselines: Method, after: tuple = ()) -> list[Method]:
        """The input, the classical baselines when enabled, the model, then `after`."""
        chosen = [(input_label, "baseline", lambda s: s.degraded)]
        if self.baselines:
            chosen += baselines
        return [*chosen, self.model(), *after]

    def microscopy_methods(self) -> list[Method]:
        """The input, blind and tuned TV and BM3D, a network trained from scratch on each image,
        the model, and the model adapted to each image (see the module docstring)."""
        bm3d, seconds = mb.bm3d_name(), self.adapt_seconds
        baselines = [
            ("TV, estimated noise", "baseline", lambda s: mb.tv_blind(s.degraded)),
            (f"{bm3d}, estimated σ", "baseline", lambda s: mb.bm3d_blind(s.degraded)),
            ("TV, tuned against the truth", "oracle", lambda s: mb.tv_tuned(s.degraded, s.clean)),
            (
                f"{bm3d}, tuned against the truth",
                "oracle",
                lambda s: mb.bm3d_tuned(s.degraded, s.clean),
            ),
        ]
        adapted = ()
        if seconds > 0:
            baselines.append(
                (
                    f"untrained network, {seconds:g} s self-supervised on the image",
                    "baseline",
                    lambda s: mb.from_scratch(s.degraded, seconds),
                )
            )
            name = self.restorer.card.name
            adapted = (
                (
                    f"{name}, adapted {seconds:g} s to the image",
                    "adapted",
                    lambda s: mb.adapted(self.restorer, s.degraded, seconds),
                ),
            )
        return self.methods("raw input", *baselines, after=adapted)

    def measure(
        self,
        key: str,
        title: str,
        samples: Iterable[Sample],
        methods: list[Method],
        shave: int | None = None,
    ) -> TaskResult:
        """Score every method on every sample; one `TaskResult`."""
        meters = [_Meter(label, kind, shave) for label, kind, _ in methods]
        for index, sample in enumerate(samples, 1):
            self.log(f"{title}: image {index} ({sample.name})")
            for meter, (_, _, restore) in zip(meters, methods, strict=True):
                start = time.perf_counter()
                restored = restore(sample)
                meter.add(sample, restored, time.perf_counter() - start)
        return TaskResult(key, title, [meter.row() for meter in meters])


def _cbsd68(ctx: Context) -> Iterator[tuple[int, Path, np.ndarray]]:
    for index, path in enumerate(ctx.files("CBSD68/clean")):
        yield index, path, crop_multiple(read_rgb(path), 16)


def run_denoise(ctx: Context) -> list[TaskResult]:
    """CBSD68 at sigma 15, 25 and 50."""
    results = []
    for sigma in SIGMAS:
        samples = (
            Sample(path.stem, clean, add_noise(clean, sigma, index), sigma=sigma)
            for index, path, clean in _cbsd68(ctx)
        )
        classical = (
            f"{classical_denoiser_name()}, true σ",
            "baseline",
            lambda s: denoise_classical(s.degraded, s.sigma),
        )
        result = ctx.measure(
            f"denoise-{sigma}", f"Denoising: CBSD68, σ = {sigma}", samples,
            ctx.methods("noisy input", classical),
        )  # fmt: skip
        result.references = PUBLISHED_DENOISE[sigma]
        results.append(result)
    return results


def _paired(ctx: Context, folder: str) -> Iterator[Sample]:
    for source, target in ctx.pairs(folder):
        yield Sample(source.stem, read_rgb(target), read_rgb(source))


def run_derain(ctx: Context) -> list[TaskResult]:
    """Rain100H: the pairs whose backgrounds no training photo shows."""
    result = ctx.measure(
        "derain", "Deraining: Rain100H", _paired(ctx, "Rain100H"), ctx.methods("rainy input")
    )
    result.references = PUBLISHED_DERAIN
    result.notes.append("Our Rain100H subset has 53 of the 100 pairs; published numbers use 100.")
    return [result]


def run_dehaze(ctx: Context) -> list[TaskResult]:
    """SOTS-indoor, one hazy image per scene for 25 scenes."""
    dcp = ("dark channel prior", "baseline", lambda s: dark_channel_prior(s.degraded))
    result = ctx.measure(
        "dehaze",
        "Dehazing: SOTS-indoor",
        _paired(ctx, "SOTS_indoor_25"),
        ctx.methods("hazy input", dcp),
    )
    result.references = PUBLISHED_DEHAZE
    result.notes.append(
        "Our SOTS-indoor subset has 25 of the 500 pairs; published numbers use 500."
    )
    return [result]


def run_hazephotos(ctx: Context) -> list[TaskResult]:
    """CBSD68 under `add_scene_haze`: haze from a model the training never used."""
    samples = (
        Sample(path.stem, clean, add_scene_haze(clean, index))
        for index, path, clean in _cbsd68(ctx)
    )
    dcp = ("dark channel prior", "baseline", lambda s: dark_channel_prior(s.degraded))
    title = "Dehazing: CBSD68 under scene haze (depth from position and luminance)"
    return [ctx.measure("hazephotos", title, samples, ctx.methods("hazy input", dcp))]


def run_sr(ctx: Context) -> list[TaskResult]:
    """x2 and x4 on Set5, Set14 and the Urban100 crops; the input is bicubic-upsampled LR."""
    results = []
    for name in SR_SETS:
        for scale in SR_SCALES:
            samples = (
                Sample(path.stem, *bicubic_pair(read_rgb(path), scale))
                for path in ctx.files(f"{name}/HR")
            )
            model = ctx.model()
            methods = [("bicubic (input)", "baseline", lambda s: s.degraded), model]
            title = f"Upsampling: {name}, ×{scale}"
            result = ctx.measure(f"sr-{name}-x{scale}", title, samples, methods, shave=scale)
            result.references = PUBLISHED_SR.get((name, scale), [])
            result.notes.append(f"Y-PSNR: BT.601 luma with a {scale}-pixel border shaved.")
            results.append(result)
    return results


def run_deblur(ctx: Context) -> list[TaskResult]:
    """CBSD68 with seeded camera-shake kernels."""

    def samples() -> Iterator[Sample]:
        for index, path, clean in _cbsd68(ctx):
            blurred, kernel = motion_blur(clean, index)
            yield Sample(path.stem, clean, blurred, kernel=kernel)

    rl = (
        f"Richardson-Lucy, true kernel, {RL_ITERATIONS} it.",
        "baseline",
        lambda s: richardson_lucy(s.degraded, s.kernel),
    )
    title = f"Motion deblurring: CBSD68, camera shake {BLUR_LENGTH:g} px"
    return [ctx.measure("deblur", title, samples(), ctx.methods("blurred input", rl))]


def run_lowlight(ctx: Context) -> list[TaskResult]:
    """CBSD68 darkened with photon noise, and under-exposed without noise, restored with the
    defaults: the Restorer itself must see that the photos are under-exposed."""
    clahe_method = ("CLAHE", "baseline", lambda s: clahe(s.degraded))
    noisy = (Sample(path.stem, clean, darken(clean, index)) for index, path, clean in _cbsd68(ctx))
    params = ", ".join(f"{k} {v:.3g}" for k, v in LOW_LIGHT.items())
    noiseless = (Sample(path.stem, clean, underexpose(clean)) for _, path, clean in _cbsd68(ctx))
    title = f"Low light: CBSD68 {EXPOSURE_STOPS} stops under in linear light, no noise"
    return [
        ctx.measure(
            "lowlight",
            f"Low light: CBSD68 ({params})",
            noisy,
            ctx.methods("dark input", clahe_method),
        ),
        ctx.measure("lowlight-ev", title, noiseless, ctx.methods("dark input", clahe_method)),
    ]


def run_fmd(ctx: Context) -> list[TaskResult]:
    """Real confocal noise: raw frame vs 50-frame average, fields 2-6."""
    folder = ctx.root / "FMD_Confocal_BPAE_B"
    names = [f"fov{n:02d}.png" for n in FMD_FIELDS][: ctx.limit]
    samples = (
        Sample(
            Path(name).stem, read_grey(folder / "target" / name), read_grey(folder / "input" / name)
        )
        for name in names
    )
    title = "Microscopy: FMD Confocal BPAE_B, fields 2–6 (real noise)"
    return [ctx.measure("fmd", title, samples, ctx.microscopy_methods())]


def fluorescence_samples(count: int, size: int) -> Iterator[Sample]:
    """`count` procedural planes of the held-out families through held-out detector depths."""
    rng = np.random.default_rng(FLUORESCENCE_SEED)
    for index in range(count):
        optics = draw_optics(rng)
        density = image(rng, (size, size), optics, HELD_OUT_FAMILIES)
        detector = draw_detector(rng, HELD_OUT_BITS)
        noisy, clean = acquire(density, detector, FLUORESCENCE_SEED * 1000 + index)
        name = f"{optics.kind}-{detector.photons:.0f}photons"
        low, high = float(clean.min()), float(clean.max())
        yield Sample(name, clean, noisy, span=(low, max(high, low + 1)))


def run_fluorescence(ctx: Context) -> list[TaskResult]:
    """Procedural specimens and detectors held out of training."""
    count = min(FLUORESCENCE_IMAGES, ctx.limit or FLUORESCENCE_IMAGES)
    title = "Microscopy: held-out procedural specimens (mitochondria, tissue), 12-bit counts"
    samples = fluorescence_samples(count, FLUORESCENCE_SIZE)
    return [ctx.measure("fluorescence", title, samples, ctx.microscopy_methods())]


IMAGE_PROTOCOLS: dict[str, Callable[[Context], list[TaskResult]]] = {
    "denoise": run_denoise,
    "derain": run_derain,
    "dehaze": run_dehaze,
    "hazephotos": run_hazephotos,
    "sr": run_sr,
    "deblur": run_deblur,
    "lowlight": run_lowlight,
    "fmd": run_fmd,
    "fluorescence": run_fluorescence,
}


def _probabilities(restorer: Restorer, image: torch.Tensor) -> np.ndarray:
    composition = restorer.analyze(_from_tensor(image[None]), axes="YXC")
    return np.array([composition.probabilities[name] for name in DEGRADATIONS])


def _single_set(ctx: Context, photos: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot labels, probabilities) for every photo x type x severity."""
    labels, scores = [], []
    for index, x in enumerate(photos):
        ctx.log(f"composition, single degradations: image {index + 1}")
        for column, name in enumerate(DEGRADATIONS):
            for k, severity in enumerate(COMPOSITION_SEVERITIES):
                generator = torch.Generator().manual_seed(1000 * index + 10 * column + k)
                degraded = apply(x, name, severity, generator)
                scores.append(_probabilities(ctx.restorer, degraded[0]))
                labels.append(np.eye(len(DEGRADATIONS))[column])
    return np.array(labels), np.array(scores)


def _mixture_set(ctx: Context, photos: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(multi-hot labels, probabilities) for `MIXTURES_PER_IMAGE` mixtures of every photo."""
    labels, scores = [], []
    for index, x in enumerate(photos):
        ctx.log(f"composition, mixtures: image {index + 1}")
        generator = torch.Generator().manual_seed(10**6 + index)
        batch = synthesize(
            x.repeat(MIXTURES_PER_IMAGE, 1, 1, 1),
            generator,
            mix_probability=1.0,
            clean_probability=0.0,
        )
        labels += list(batch.labels.numpy())
        scores += [_probabilities(ctx.restorer, image) for image in batch.degraded]
    return np.array(labels), np.array(scores)


def run_composition(ctx: Context) -> CompositionResult:
    """Top-1 accuracy and AUC of `Restorer.analyze` on synthetic single and mixed degradations."""
    photos = [_to_tensor(crop_centre(clean, COMPOSITION_CROP)) for _, _, clean in _cbsd68(ctx)]
    single_labels, single_scores = _single_set(ctx, photos)
    mix_labels, mix_scores = _mixture_set(ctx, photos)
    truth = single_labels.argmax(axis=1)
    hits = single_scores.argmax(axis=1) == truth
    predicted_sets = mix_scores >= THRESHOLD
    return CompositionResult(
        single_count=len(truth),
        single_top1=float(hits.mean()),
        single_top1_per_type={
            n: float(hits[truth == c].mean()) for c, n in enumerate(DEGRADATIONS)
        },
        single_auc=_auc_per_type(single_labels, single_scores),
        single_confusion=confusion(truth, single_scores.argmax(axis=1)),
        mixture_count=len(mix_labels),
        mixture_auc=_auc_per_type(mix_labels, mix_scores),
        mixture_exact=float((predicted_sets == mix_labels.astype(bool)).all(axis=1).mean()),
    )


def confusion(truth: np.ndarray, predicted: np.ndarray) -> dict[str, dict[str, int]]:
    """How often each true type (index into `DEGRADATIONS`) was read as each type."""
    return {
        name: {
            read: int(np.sum((truth == c) & (predicted == r)))
            for r, read in enumerate(DEGRADATIONS)
        }
        for c, name in enumerate(DEGRADATIONS)
    }


def _auc_per_type(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {n: roc_auc(labels[:, c], scores[:, c]) for c, n in enumerate(DEGRADATIONS)}


def parse_tasks(text: str) -> list[str]:
    """`all` or a comma-separated list of `TASKS`, in `TASKS` order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return list(TASKS)
    unknown = sorted(names - set(TASKS))
    if unknown or not names:
        raise InputError(
            f"unknown tasks {unknown or text!r}; use all or some of {', '.join(TASKS)}"
        )
    return [name for name in TASKS if name in names]


def evaluate(ctx: Context, tasks: Iterable[str], meta: dict[str, str]) -> Report:
    """Run the chosen protocols and the goals on them."""
    tasks = list(tasks)
    results = [r for name in tasks if name in IMAGE_PROTOCOLS for r in IMAGE_PROTOCOLS[name](ctx)]
    composition = run_composition(ctx) if "composition" in tasks else None
    return Report(meta, results, composition, goals(results, composition))


# --- goals -----------------------------------------------------------------------------------


def _find(results: list[TaskResult], key: str) -> TaskResult | None:
    return next((r for r in results if r.key == key), None)


def _denoise_goals(results: list[TaskResult]) -> list[Goal]:
    s25 = _find(results, "denoise-25")
    model25 = s25.model_row() if s25 else None
    first = Goal(
        "CBSD68 σ = 25: PSNR ≥ 31.0 dB",
        None if model25 is None else model25.psnr >= 31.0,
        "not measured" if model25 is None else f"{model25.psnr:.2f} dB",
    )
    gaps = []
    for sigma in SIGMAS:
        task = _find(results, f"denoise-{sigma}")
        cbm3d = task and next((r for r in task.rows if r.method.startswith("CBM3D")), None)
        if cbm3d:
            gaps.append((sigma, task.model_row().psnr - cbm3d.psnr))
    measured = len(gaps) == len(SIGMAS)
    second = Goal(
        "every σ: PSNR ≥ CBM3D + 0.3 dB",
        all(gap >= 0.3 for _, gap in gaps) if measured else None,
        "; ".join(f"σ {s}: {g:+.2f} dB" for s, g in gaps)
        if measured
        else "not measured (needs all σ with CBM3D: `pip install .[eval]`, --baselines)",
    )
    return [first, second]


def _baseline_goal(results: list[TaskResult]) -> Goal:
    gaps = []
    for task in results:
        model, best = task.model_row(), task.best_baseline()
        if model and best:
            gaps.append((task.key, model.psnr - best.psnr))
    missed = [f"{key} ({gap:+.2f} dB)" for key, gap in gaps if gap <= 0]
    detail = "missed on " + ", ".join(missed) if missed else f"{len(gaps)} tables"
    return Goal(
        "every task: PSNR above its best baseline",
        (not missed) if gaps else None,
        detail if gaps else "not measured",
    )


def goals(results: list[TaskResult], composition: CompositionResult | None) -> list[Goal]:
    """The issue's targets, judged on what this run measured."""
    fmd = _find(results, "fmd")
    fmd_gain = fmd and fmd.model_row().psnr - fmd.rows[0].psnr
    return [
        *_denoise_goals(results),
        _baseline_goal(results),
        Goal(
            "composition: top-1 ≥ 95 % on single degradations",
            None if composition is None else composition.single_top1 >= 0.95,
            "not measured" if composition is None else f"{100 * composition.single_top1:.1f} %",
        ),
        Goal(
            "FMD fields 2–6: PSNR ≥ input + 6 dB on average",
            None if fmd is None else fmd_gain >= 6.0,
            "not measured" if fmd is None else f"{fmd_gain:+.2f} dB",
        ),
        *_microscopy_goals(results),
    ]


def _microscopy_goals(results: list[TaskResult]) -> list[Goal]:
    fmd, held_out = _find(results, "fmd"), _find(results, "fluorescence")
    fmd_psnr = fmd and fmd.model_row().psnr
    oracle = held_out and held_out.row_of("oracle", mb.bm3d_name())
    gap = oracle and held_out.model_row().psnr - oracle.psnr
    worse = [
        f"{task.key} image {i + 1} ({after - before:+.2f} dB)"
        for task in (fmd, held_out)
        if task and task.row_of("adapted")
        for i, (before, after) in enumerate(
            zip(task.model_row().per_image, task.row_of("adapted").per_image, strict=True)
        )
        if after < before
    ]
    measured = any(task and task.row_of("adapted") for task in (fmd, held_out))
    return [
        Goal(
            "FMD fields 2–6: PSNR ≥ 39.8 dB",
            None if fmd is None else fmd_psnr >= 39.8,
            "not measured" if fmd is None else f"{fmd_psnr:.2f} dB",
        ),
        Goal(
            "held-out procedural specimens: PSNR ≥ BM3D tuned against the truth",
            None if not oracle else gap >= 0,
            "not measured" if not oracle else f"{gap:+.2f} dB",
        ),
        Goal(
            "adaptation never below the default, image by image (microscopy)",
            (not worse) if measured else None,
            ("below on " + ", ".join(worse) if worse else "never below")
            if measured
            else "not measured",
        ),
    ]


# --- provenance ------------------------------------------------------------------------------


def git_commit(directory: Path | None = None) -> str:
    """`git rev-parse --short HEAD` (with `-dirty` when files differ), or "unknown"."""
    cwd = directory or Path(__file__).parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else from `platform`, with the core count."""
    name = ""
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count()} logical cores"


def hardware(device: torch.device) -> str:
    """The CPU and, when the model runs on CUDA, the GPU."""
    text = f"CPU: {cpu_name()}"
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return text + f"; model on {device}"


def provenance(restorer: Restorer, root: Path, command: str, limit: int | None) -> dict[str, str]:
    """The facts a reader needs to trust and reproduce the numbers."""
    steps = restorer.card.training.get("steps", 0)
    return {
        "command": command,
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(restorer.device),
        "torch": torch.__version__,
        "model": f"{restorer.card.name} (preset {restorer.card.preset.get('name', '?')})",
        "training steps": str(steps),
        "data": str(root),
        "images per task": "all" if limit is None else f"at most {limit}",
        "classical denoiser": classical_denoiser_name(),
    }


# --- Markdown --------------------------------------------------------------------------------


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _table(task: TaskResult) -> list[str]:
    with_y = any(row.psnr_y is not None for row in task.rows)
    head = ["method", "PSNR (dB)", "SSIM", "images", "s / image"]
    if with_y:
        head.insert(2, "Y-PSNR (dB)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in task.rows:
        name = f"**{row.method}**" if row.kind in ("model", "adapted") else row.method
        cells = [name, _number(row.psnr, 2), _number(row.ssim, 4), str(row.images)]
        cells.append(_number(row.seconds, 2))
        if with_y:
            cells.insert(2, _number(row.psnr_y, 2))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _references(task: TaskResult) -> list[str]:
    if not task.references:
        return []
    lines = [
        "",
        "Published, not measured here:",
        "",
        "| method | PSNR (dB) | SSIM | note |",
        "|---|---|---|---|",
    ]
    for row in task.references:
        lines.append(f"| {row.method} | {row.psnr:.2f} | {_number(row.ssim, 4)} | {row.note} |")
    return lines


def _composition_section(result: CompositionResult) -> list[str]:
    lines = [
        "## Degradation composition (`Restorer.analyze`)",
        "",
        f"Single degradations: {result.single_count} images (CBSD68 {COMPOSITION_CROP}×"
        f"{COMPOSITION_CROP} centre crops × {len(DEGRADATIONS)} types × severities "
        f"{', '.join(map(str, COMPOSITION_SEVERITIES))}); top-1 accuracy "
        f"**{100 * result.single_top1:.1f} %**.",
        f"Mixtures of 2–3 types (`synthesize(mix_probability=1)`): {result.mixture_count} images; "
        f"mean AUC **{result.mixture_mean_auc:.3f}**, exact-set accuracy at p ≥ {THRESHOLD} "
        f"**{100 * result.mixture_exact:.1f} %**.",
        "",
        "| type | top-1 (single) | AUC (single) | AUC (mixtures) |",
        "|---|---|---|---|",
    ]
    for name in DEGRADATIONS:
        lines.append(
            f"| {name} | {100 * result.single_top1_per_type[name]:.1f} % | "
            f"{_number(result.single_auc[name], 3)} | {_number(result.mixture_auc[name], 3)} |"
        )
    lines += [
        "",
        "Single degradations, true type (rows) against the type read (the most probable; columns):",
        "",
        "| true type | " + " | ".join(DEGRADATIONS) + " |",
        "|---" * (len(DEGRADATIONS) + 1) + "|",
    ]
    for name, counts in result.single_confusion.items():
        lines.append(f"| {name} | " + " | ".join(str(counts[r]) for r in DEGRADATIONS) + " |")
    return lines


def _goal_section(report: Report) -> list[str]:
    status = {True: "met", False: "**missed**", None: "not measured"}
    lines = ["## Goals", "", "| goal | measured | status |", "|---|---|---|"]
    lines += [f"| {g.text} | {g.detail} | {status[g.met]} |" for g in report.goals]
    return lines


def to_markdown(report: Report) -> str:
    """The report as `benchmarks/RESULTS.md`."""
    meta = report.meta
    lines = [
        "# Quality benchmark",
        "",
        f"Generated by `{meta['command']}`; do not edit by hand. Protocols: "
        "`src/allinone/evaluate.py` (module docstring).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in meta.items() if key != "command"),
    ]
    if meta.get("training steps") == "0":
        lines += [
            "",
            "> **Untrained model (random weights).** These numbers only show that the protocols "
            "run; they say nothing about the method's quality.",
        ]
    if meta.get("images per task") != "all":
        lines += ["", "> Subsets: at most the first N images of each set; not the full sets."]
    lines += ["", *_goal_section(report)]
    for task in report.tasks:
        lines += ["", f"## {task.title}", "", *_table(task), *_references(task)]
        lines += [f"\n{note}" for note in task.notes]
    if report.composition is not None:
        lines += ["", *_composition_section(report.composition)]
    return "\n".join(lines) + "\n"


# --- published references (not measured here) ---------------------------------------------------


def _published(method: str, psnr_db: float, ssim_value: float | None, note: str) -> Row:
    return Row(method, psnr_db, ssim_value, 0, kind="published", note=note)


PUBLISHED_DENOISE: dict[int, list[Row]] = {
    sigma: [
        _published("CBM3D", cbm3d, None, "as reported by FFDNet (TIP 2018), 68 images"),
        _published("AirNet (CVPR 2022)", airnet, None, "all-in-one, 3 tasks; reported by PromptIR"),
        _published("PromptIR (NeurIPS 2023)", promptir, None, "all-in-one, 3 tasks"),
    ]
    for sigma, cbm3d, airnet, promptir in (
        (15, 33.52, 33.92, 33.98),
        (25, 30.71, 31.26, 31.31),
        (50, 27.38, 28.00, 28.06),
    )
}
PUBLISHED_DERAIN = [
    _published("Restormer (CVPR 2022)", 31.46, 0.904, "single-task; Y channel; 100 pairs"),
]
PUBLISHED_DEHAZE = [
    _published("DCP", 16.62, 0.818, "as reported by DehazeFormer (TIP 2023); 500 pairs"),
    _published("DehazeFormer-B (TIP 2023)", 37.84, 0.994, "single-task; 500 pairs"),
]
PUBLISHED_SR: dict[tuple[str, int], list[Row]] = {
    (name, scale): [
        _published("bicubic (MATLAB)", bicubic, bicubic_ssim, "Y channel, the SR convention"),
        _published("EDSR (CVPRW 2017)", edsr, edsr_ssim, "real LR input, Y channel"),
    ]
    for name, scale, bicubic, bicubic_ssim, edsr, edsr_ssim in (
        ("Set5", 2, 33.66, 0.9299, 38.11, 0.9602),
        ("Set5", 4, 28.42, 0.8104, 32.46, 0.8968),
        ("Set14", 2, 30.24, 0.8688, 33.92, 0.9195),
        ("Set14", 4, 26.00, 0.7027, 28.80, 0.7876),
    )
}
