"""Does the self-supervised score pick the better of the default and the adapted model?

For each microscopy image (FMD fields 2-6, and the held-out procedural planes of `allinone eval
--tasks fluorescence`), adapt the model self-supervised for SECONDS to the image's first 80 % of
columns (no selection: the last weights), then score the default and the adapted model on the
last 20 %, which adaptation never saw: against the truth, by the blind-spot score fine-tuning
validates with (one mask), by the same score over all `SPACING` x `SPACING` masks (every pixel
of the strip a blind spot once), and by a neighbour-pair score (the first half-size image of
`neighbours.neighbour_pair` restored whole, against the second). `--photos N` adds the first N
CBSD68 photos under Gaussian noise, sigma 25 (as `allinone eval` adds it), where adaptation pays.
Prints one line per image and how often each score ranks the two models as the truth does.

`--selected` measures instead what `restore --learn-noise SECONDS` outputs: the model adapted
with fine-tuning's own validation and selection (a strip held out, the significance bar, the
shares of the change), the whole image restored, against the truth, beside the default's.
Usage:

    python benchmarks/adaptation_selection.py [--model NAME|PATH] [--seconds 60] [--data DIR]
        [--lr 1e-3] [--adapt all|degradation] [--photos 0] [--selected]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from allinone.evaluate import (
    FLUORESCENCE_SIZE,
    Sample,
    add_noise,
    crop_multiple,
    fluorescence_samples,
    read_grey,
    read_rgb,
)
from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Restorer
from allinone.train.finetune import finetune
from allinone.train.neighbours import SPACING, blind_spots, neighbour_pair

SCORES = ("blind_spot", "all_blind_spots", "pair")


def _samples(root: Path, photos: int) -> list[Sample]:
    folder = root / "FMD_Confocal_BPAE_B"
    fmd = [
        Sample(
            f"fmd-fov{n:02d}",
            read_grey(folder / "target" / f"fov{n:02d}.png"),
            read_grey(folder / "input" / f"fov{n:02d}.png"),
        )
        for n in range(2, 7)
    ]
    noisy_photos = []
    for index, path in enumerate(sorted((root / "CBSD68" / "clean").glob("*.png"))[:photos]):
        clean = crop_multiple(read_rgb(path), 16)
        noisy_photos.append(
            Sample(f"cbsd68-{path.stem}-sigma25", clean, add_noise(clean, 25, index))
        )
    return fmd + list(fluorescence_samples(8, FLUORESCENCE_SIZE)) + noisy_photos


def _db(mse: float, sample: Sample) -> float:
    peak = 255.0 if sample.span is None else sample.span[1] - sample.span[0]
    return 10 * math.log10(peak**2 / max(mse, 1e-12))


def _scores(restorer: Restorer, sample: Sample, rng_seed: int) -> dict[str, float]:
    width = sample.degraded.shape[1]
    strip = slice(width - round(0.2 * width), width)
    noisy = sample.degraded[:, strip].astype(np.float32)
    clean = sample.clean[:, strip].astype(np.float64)
    channels = noisy if noisy.ndim == 3 else noisy[..., None]

    def restore(image: np.ndarray) -> np.ndarray:
        if noisy.ndim == 3:  # an 8-bit photo, restored as one
            return restorer.restore(np.round(image).astype(np.uint8), "YXC").astype(np.float32)
        return restorer.restore(image[..., 0], "YX", scaling="percentile")[..., None]

    def blind_errors(offset: tuple[int, int] | None) -> np.ndarray:
        masked, mask = blind_spots(channels, np.random.default_rng(rng_seed), offset)
        return ((restore(masked) - channels)[mask] ** 2).ravel()

    every = [(dy, dx) for dy in range(SPACING) for dx in range(SPACING)]
    even = channels[: noisy.shape[0] // 2 * 2, : noisy.shape[1] // 2 * 2]
    first, second = neighbour_pair(even, np.random.default_rng(rng_seed))
    restored = restore(channels)[..., 0] if noisy.ndim == 2 else restore(channels)
    return {
        "true": float(np.mean((restored - clean) ** 2)),
        "blind_spot": float(np.mean(blind_errors(None))),
        "all_blind_spots": float(np.mean(np.concatenate([blind_errors(o) for o in every]))),
        "pair": float(np.mean((restore(first) - second) ** 2)),
    }


def _options(sample: Sample) -> RestoreOptions:
    """Photos restore as photos; microscopy keeps its exposure (percentile scaling)."""
    return RestoreOptions(scaling="auto" if sample.degraded.ndim == 3 else "percentile")


def _axes(sample: Sample) -> str:
    return "YXC" if sample.degraded.ndim == 3 else "YX"


def selected(default: Restorer, samples: list[Sample], args: argparse.Namespace) -> None:
    """What `restore --learn-noise` outputs, image by image, against the default's restoration."""
    gains = []
    for sample in samples:
        result = finetune(
            default,
            [(sample.degraded, None)],
            axes=_axes(sample),
            seconds=args.seconds,
            lr=args.lr,
            adapt=args.adapt,
            options=_options(sample),
        )
        truth = sample.clean.astype(np.float64)
        errors = [
            np.mean(
                (r.restore(sample.degraded, _axes(sample), options=_options(sample)) - truth) ** 2
            )
            for r in (default, result.restorer)
        ]
        gains.append(10 * math.log10(errors[0] / errors[1]))
        print(
            f"{sample.name:28s} default {_db(errors[0], sample):6.2f} dB, learn-noise "
            f"{_db(errors[1], sample):6.2f} dB ({gains[-1]:+.3f}); {result.steps} steps, share "
            f"of the change kept {result.share:g}",
            flush=True,
        )
    worse = sum(gain < -0.005 for gain in gains)
    print(
        f"mean gain {np.mean(gains):+.3f} dB; worst {min(gains):+.3f}; "
        f"{worse} of {len(gains)} below the default"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (1e-3)")
    parser.add_argument("--adapt", default="all", help="all or degradation (all)")
    parser.add_argument("--photos", type=int, default=0, help="CBSD68 photos, sigma 25 (0)")
    parser.add_argument("--selected", action="store_true", help="what --learn-noise outputs")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    default = Restorer.from_pretrained(args.model, device="cpu")
    samples = _samples(Path(args.data), args.photos)
    if args.selected:
        selected(default, samples, args)
        return
    agree = dict.fromkeys(SCORES, 0)
    for index, sample in enumerate(samples):
        height, width = sample.degraded.shape[:2]
        adapted = finetune(
            default,
            [(sample.degraded, None)],
            axes=_axes(sample),
            rois=[(0, height, 0, width - round(0.2 * width))],
            val_fraction=0.0,
            seconds=args.seconds,
            lr=args.lr,
            adapt=args.adapt,
            options=_options(sample),
        )
        before = _scores(default, sample, index)
        after = _scores(adapted.restorer, sample, index)
        gains = {key: 10 * math.log10(before[key] / after[key]) for key in before}
        for score in agree:
            agree[score] += (gains[score] > 0) == (gains["true"] > 0)
        print(
            f"{sample.name:28s} default {_db(before['true'], sample):6.2f} dB, adapted "
            f"{_db(after['true'], sample):6.2f} dB; gain by the "
            f"truth {gains['true']:+.3f}, by blind spots {gains['blind_spot']:+.3f} (all masks "
            f"{gains['all_blind_spots']:+.3f}), by neighbour pairs {gains['pair']:+.3f} dB",
            flush=True,
        )
    count = len(samples)
    for score, hits in agree.items():
        print(f"the {score} gain has the truth's sign on {hits}/{count} images")


if __name__ == "__main__":
    main()
