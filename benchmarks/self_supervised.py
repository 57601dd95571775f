"""Self-supervised fine-tuning (no clean images) measured against the clean references.

    python benchmarks/self_supervised.py [--data DIR] [--limit 8] [--sigmas 25]
        [--photons P ...] [--seconds 60 ...] [--lr 1e-3] [--adapt all|degradation]
        [--fmd-seconds 110] [--model default] [--device cpu]

Two protocols, both with the engine's defaults (`allinone.train.finetune.finetune` on
`(noisy, None)`, 20 % of each image held out for its validation), then `Restorer.restore` of the
whole noisy image:

- per image: each of the first `--limit` CBSD68 photos under Gaussian noise as `allinone eval`
  adds it (cropped to a multiple of 16, seed = image index), and under Poisson noise at each of
  `--photons` (photon counts at white, rounded and clipped to 8 bits), the model fine-tuned on
  that noisy photo alone for each of `--seconds` (with `--lr` and `--adapt`), then restored;
- per sample: the model fine-tuned for `--fmd-seconds` on the raw noisy FMD field 2 alone, then
  used on fields 2-6 (the benchmark fields); `--fmd-seconds 0` skips it.

Prints PSNR (dB, data range 255) of the input, the model as given and the fine-tuned model, and
the steps each run took. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import numpy as np
import torch

from allinone.evaluate import (
    add_noise,
    crop_multiple,
    git_commit,
    hardware,
    psnr,
    read_grey,
    read_rgb,
)
from allinone.infer.restorer import Restorer
from allinone.train.data import data_root
from allinone.train.finetune import finetune

FMD_FIELDS = ("02", "03", "04", "05", "06")


def adapted(
    restorer: Restorer, noisy: np.ndarray, seconds: float, args: argparse.Namespace
) -> tuple[Restorer, int, bool]:
    """`restorer` fine-tuned on `noisy` alone for `seconds` with `args.lr` and `args.adapt`,
    the steps it took, and whether the adapted weights were kept."""
    result = finetune(restorer, [(noisy, None)], seconds=seconds, lr=args.lr, adapt=args.adapt)
    return result.restorer, result.steps, result.improved


def poisson_noise(image: np.ndarray, photons: float, seed: int) -> np.ndarray:
    """Photon noise: `photons` counts at white, scaled back to 8 bits, rounded and clipped."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(image.astype(np.float64) * photons / 255)
    return np.clip(np.round(counts * 255 / photons), 0, 255).astype(np.uint8)


def per_image(restorer: Restorer, args: argparse.Namespace) -> None:
    """CBSD68 under Gaussian and Poisson noise, one fine-tuning per noisy photo and budget."""
    paths = sorted((data_root(args.data) / "CBSD68" / "clean").glob("*.png"))[: args.limit]
    noises = [(f"sigma {s}", functools.partial(add_noise, sigma=s)) for s in args.sigmas]
    noises += [
        (f"Poisson, {p:g} photons at white", functools.partial(poisson_noise, photons=p))
        for p in args.photons
    ]
    for label, noise in noises:
        for seconds in args.seconds:
            print(f"\n## CBSD68, {label}: fine-tuned on each noisy photo for {seconds:g} s\n")
            print("| image | input | as given | fine-tuned | gain | steps | kept |")
            print("|---|---|---|---|---|---|---|")
            rows = []
            for index, path in enumerate(paths):
                clean = crop_multiple(read_rgb(path), 16)
                noisy = noise(clean, seed=index)
                tuned, steps, kept = adapted(restorer, noisy, seconds, args)
                rows.append(scores(clean, noisy, restorer, tuned))
                print(f"| {path.stem} | {_cells(rows[-1])} | {steps} | {kept} |", flush=True)
            print(f"| **mean** | {_cells(np.mean(rows, axis=0))} | | |")


def per_sample(restorer: Restorer, args: argparse.Namespace) -> None:
    """FMD confocal: one fine-tuning on field 2's raw noisy frame, used on fields 2-6."""
    root = data_root(args.data) / "FMD_Confocal_BPAE_B"
    tuned, steps, _ = adapted(restorer, read_grey(root / "input/fov02.png"), args.fmd_seconds, args)
    print(f"\n## FMD confocal: fine-tuned on the noisy field 2 alone ({steps} steps)\n")
    print("| field | input | as given | fine-tuned | gain |\n|---|---|---|---|---|")
    rows = []
    for field in FMD_FIELDS:
        noisy, clean = (read_grey(root / f"{kind}/fov{field}.png") for kind in ("input", "target"))
        rows.append(scores(clean, noisy, restorer, tuned))
        print(f"| {field} | {_cells(rows[-1])} |", flush=True)
    print(f"| **mean** | {_cells(np.mean(rows, axis=0))} |")


def scores(clean: np.ndarray, noisy: np.ndarray, given: Restorer, tuned: Restorer) -> list[float]:
    """PSNR of the noisy image, of `given`'s and of `tuned`'s restorations."""
    return [psnr(clean, image) for image in (noisy, given.restore(noisy), tuned.restore(noisy))]


def _cells(row) -> str:
    """The row's PSNRs and the gain of the last over the one before it."""
    return " | ".join(f"{value:.2f}" for value in row) + f" | {row[2] - row[1]:+.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="data folder (default: $ALLINONE_DATA, else ../shared/data)")
    parser.add_argument("--limit", type=int, default=8, help="CBSD68 photos (default: 8)")
    parser.add_argument("--sigmas", type=int, nargs="+", default=[25], help="default: 25")
    parser.add_argument("--photons", type=float, nargs="*", default=[], help="default: none")
    parser.add_argument("--seconds", type=float, nargs="+", default=[60.0], help="default: 60")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (1e-3)")
    parser.add_argument("--adapt", default="all", help="all or degradation (all)")
    parser.add_argument("--fmd-seconds", type=float, default=110.0, help="default: 110")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    restorer = Restorer.from_pretrained(args.model, device=args.device)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# Self-supervised fine-tuning: {args.model} on {args.device}, {started}\n")
    print(f"`python {' '.join(sys.argv)}`\n")
    print(f"commit {git_commit()}; torch {torch.__version__}, {torch.get_num_threads()} threads;")
    print(f"{hardware(restorer.device)}")
    per_image(restorer, args)
    if args.fmd_seconds > 0:
        per_sample(restorer, args)


if __name__ == "__main__":
    main()
