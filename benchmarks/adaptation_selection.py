"""Does the self-supervised score pick the better of the default and the adapted model?

For each microscopy image (FMD fields 2-6, and the held-out procedural planes of `allinone eval
--tasks fluorescence`), adapt the model self-supervised for SECONDS to the image's first 80 % of
columns (no selection: the last weights), then score the default and the adapted model on the
last 20 %, which adaptation never saw: against the truth, by the blind-spot score fine-tuning
validates with, and by a neighbour-pair score (the first half-size image of
`neighbours.neighbour_pair` restored whole, against the second). Prints one line per image and
how often each score ranks the two models as the truth does. Usage:

    python benchmarks/adaptation_selection.py [--model NAME|PATH] [--seconds 60] [--data DIR]
        [--lr 1e-3] [--adapt all|degradation]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from allinone.evaluate import FLUORESCENCE_SIZE, Sample, fluorescence_samples, read_grey
from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Restorer
from allinone.train.finetune import finetune
from allinone.train.neighbours import blind_spots, neighbour_pair


def _samples(root: Path) -> list[Sample]:
    folder = root / "FMD_Confocal_BPAE_B"
    fmd = [
        Sample(
            f"fmd-fov{n:02d}",
            read_grey(folder / "target" / f"fov{n:02d}.png"),
            read_grey(folder / "input" / f"fov{n:02d}.png"),
        )
        for n in range(2, 7)
    ]
    return fmd + list(fluorescence_samples(8, FLUORESCENCE_SIZE))


def _db(mse: float, sample: Sample) -> float:
    peak = 255.0 if sample.span is None else sample.span[1] - sample.span[0]
    return 10 * math.log10(peak**2 / max(mse, 1e-12))


def _scores(restorer: Restorer, sample: Sample, rng_seed: int) -> dict[str, float]:
    width = sample.degraded.shape[1]
    strip = slice(width - round(0.2 * width), width)
    noisy = sample.degraded[:, strip].astype(np.float32)
    clean = sample.clean[:, strip].astype(np.float64)

    def restore(image: np.ndarray) -> np.ndarray:
        return restorer.restore(image, axes="YX", scaling="percentile")

    masked, mask = blind_spots(noisy[..., None], np.random.default_rng(rng_seed))
    blind = restore(masked[..., 0])
    even = noisy[: noisy.shape[0] // 2 * 2, : noisy.shape[1] // 2 * 2, None]
    first, second = neighbour_pair(even, np.random.default_rng(rng_seed))
    return {
        "true": float(np.mean((restore(noisy) - clean) ** 2)),
        "blind_spot": float(np.mean((blind[mask] - noisy[mask]) ** 2)),
        "pair": float(np.mean((restore(first[..., 0]) - second[..., 0]) ** 2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (1e-3)")
    parser.add_argument("--adapt", default="all", help="all or degradation (all)")
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    default = Restorer.from_pretrained(args.model, device="cpu")
    agree = {"blind_spot": 0, "pair": 0}
    samples = _samples(Path(args.data))
    for index, sample in enumerate(samples):
        height, width = sample.degraded.shape
        adapted = finetune(
            default,
            [(sample.degraded, None)],
            axes="YX",
            rois=[(0, height, 0, width - round(0.2 * width))],
            val_fraction=0.0,
            seconds=args.seconds,
            lr=args.lr,
            adapt=args.adapt,
            options=RestoreOptions(scaling="percentile"),
        )
        before = _scores(default, sample, index)
        after = _scores(adapted.restorer, sample, index)
        gains = {key: 10 * math.log10(before[key] / after[key]) for key in before}
        for score in agree:
            agree[score] += (gains[score] > 0) == (gains["true"] > 0)
        print(
            f"{sample.name:28s} default {_db(before['true'], sample):6.2f} dB, adapted "
            f"{_db(after['true'], sample):6.2f} dB; gain by the "
            f"truth {gains['true']:+.3f}, by blind spots {gains['blind_spot']:+.3f}, by "
            f"neighbour pairs {gains['pair']:+.3f} dB",
            flush=True,
        )
    count = len(samples)
    for score, hits in agree.items():
        print(f"the {score} gain has the truth's sign on {hits}/{count} images")


if __name__ == "__main__":
    main()
