"""Microscopy planes with a few very bright specks: the default with and without local gain.

Each image of FMD fields 2-6 (real confocal noise) and of the held-out procedural planes of
`allinone eval --tasks fluorescence` gets four square specks (debris, a saturated cell, beads)
of SIZE pixels at BRIGHTNESS times the image's 99.9th percentile (above its 0.1th: counts above
a camera's offset), in its input and its truth alike; with a fraction of a percent of the
pixels, they hold the percentile that scaling puts at 1. PSNR is measured outside the specks
and a 16-pixel margin around them, on the image's own peak (255 for FMD, the clean span for
the procedural planes). Rows: the input, total variation with its weight estimated blind
(`allinone.microscopy_baselines`), the default with local gain (`allinone.infer.local_gain`,
on by default) and without it (`--no-local-gain`). Brightness 1 means no specks: the planes
as they are. Prints a markdown table.

Usage:

    python benchmarks/bright_specks.py [--model NAME|PATH] [--data DIR] [--sizes 12 48]
        [--brightness 1 4 8 30]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from allinone import microscopy_baselines as mb
from allinone.evaluate import FLUORESCENCE_SIZE, Sample, fluorescence_samples, read_grey
from allinone.evaluate.protocols import FMD_FIELDS
from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Restorer

MARGIN = 16
METHODS = ("input", "TV, estimated noise", "default, local gain", "default, no local gain")


def _fmd(root: Path) -> Iterator[Sample]:
    folder = root / "FMD_Confocal_BPAE_B"
    for n in FMD_FIELDS:
        name = f"fov{n:02d}.png"
        yield Sample(name, read_grey(folder / "target" / name), read_grey(folder / "input" / name))


def with_specks(sample: Sample, size: int, brightness: float) -> tuple[Sample, np.ndarray]:
    """(`sample` as float32 with four specks in input and truth, the mask of pixels scored)."""
    degraded = sample.degraded.astype(np.float32)
    clean = sample.clean.astype(np.float32)
    scored = np.ones(degraded.shape, bool)
    if brightness > 1:
        low, high = np.percentile(degraded, [0.1, 99.9])
        value = float(low + brightness * (high - low))
        h, w = degraded.shape
        for y, x in (
            (h // 8, w // 8),
            (h // 8, 5 * w // 8),
            (5 * h // 8, w // 8),
            (5 * h // 8, 5 * w // 8),
        ):
            degraded[y : y + size, x : x + size] = clean[y : y + size, x : x + size] = value
            scored[
                max(y - MARGIN, 0) : y + size + MARGIN, max(x - MARGIN, 0) : x + size + MARGIN
            ] = False
    return Sample(sample.name, clean, degraded, span=sample.span), scored


def _psnr(estimate: np.ndarray, sample: Sample, scored: np.ndarray) -> float:
    peak = 255.0 if sample.span is None else sample.span[1] - sample.span[0]
    error = (estimate.astype(np.float64) - sample.clean)[scored]
    return 10 * math.log10(peak**2 / max(float(np.mean(error**2)), 1e-12))


def scores(restorer: Restorer, sample: Sample, scored: np.ndarray) -> list[float]:
    """PSNR of each of `METHODS` on `sample`."""
    noisy = sample.degraded
    return [
        _psnr(estimate, sample, scored)
        for estimate in (
            noisy,
            mb.tv_blind(noisy),
            restorer.restore(noisy, "YX", options=RestoreOptions(scaling="percentile")),
            restorer.restore(
                noisy, "YX", options=RestoreOptions(scaling="percentile", local_gain=False)
            ),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 48])
    parser.add_argument("--brightness", type=float, nargs="+", default=[1, 4, 8, 30])
    args = parser.parse_args()
    restorer = Restorer.from_pretrained(args.model, device="cpu")
    sets = {
        "FMD fields 2-6": list(_fmd(Path(args.data))),
        "held-out procedural": list(fluorescence_samples(8, FLUORESCENCE_SIZE)),
    }
    print("| images | specks | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for title, samples in sets.items():
        for brightness in args.brightness:
            for size in args.sizes if brightness > 1 else [0]:
                rows = [scores(restorer, *with_specks(s, size, brightness)) for s in samples]
                means = " | ".join(f"{value:.2f}" for value in np.mean(rows, axis=0))
                specks = f"4 x {size} px at {brightness:g}x" if brightness > 1 else "none"
                print(f"| {title} | {specks} | {means} |", flush=True)


if __name__ == "__main__":
    main()
