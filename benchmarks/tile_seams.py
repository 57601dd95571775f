"""Tiled against whole-image restores: how far apart they are, and what tiling costs.

    python benchmarks/tile_seams.py [--model default] [--size 1024] [--settings 512/32,256/32]

skimage's astronaut, resized to `--size` pixels square, under Gaussian noise of σ 15 grey levels
(rounded, clipped to uint8), is restored once as one tile (`tile=0`) and once per `tile/overlap`
setting ("auto" for the device's default tile) on the CPU. For each setting it prints the
largest, mean and 99.9th-percentile absolute difference to the whole-image restore in grey
levels, and the seconds of each restore.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from skimage import data, transform

from allinone.infer.restorer import Restorer


def noisy_astronaut(size: int, sigma: float = 15.0, seed: int = 0) -> np.ndarray:
    """The astronaut resized to `size` x `size`, with rounded Gaussian noise, as uint8."""
    clean = transform.resize(data.astronaut(), (size, size), anti_aliasing=True) * 255
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
    return np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)


def timed_restore(restorer: Restorer, image: np.ndarray, tile: int | None, overlap: int):
    """(restored image, seconds)."""
    started = time.perf_counter()
    restored = restorer.restore(image, tile=tile, overlap=overlap)
    return restored, time.perf_counter() - started


def parse_setting(text: str) -> tuple[int | None, int]:
    """'256/32' → (256, 32); 'auto/32' → (None, 32)."""
    tile, overlap = text.split("/")
    return (None if tile == "auto" else int(tile)), int(overlap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--settings", default="auto/32,256/32,256/64,512/64")
    args = parser.parse_args()
    restorer = Restorer.from_pretrained(args.model, device="cpu")
    image = noisy_astronaut(args.size)
    print(f"# tile seams: {args.model}, {args.size}² astronaut, σ 15, uint8")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, ", end="")
    print(f"{torch.get_num_threads()} threads, auto tile {restorer.auto_tile()}")
    restorer.restore(image[:64, :64], tile=0)
    whole, seconds = timed_restore(restorer, image, 0, 32)
    print(f"{'tile/overlap':>12} {'max':>5} {'mean':>7} {'p99.9':>6} {'seconds':>8}")
    print(f"{'whole':>12} {'':>5} {'':>7} {'':>6} {seconds:8.2f}")
    for text in args.settings.split(","):
        tile, overlap = parse_setting(text)
        tiled, seconds = timed_restore(restorer, image, tile, overlap)
        difference = np.abs(tiled.astype(int) - whole.astype(int))
        p999 = np.percentile(difference, 99.9)
        print(
            f"{text:>12} {difference.max():5d} {difference.mean():7.3f} {p999:6.1f} {seconds:8.2f}"
        )


if __name__ == "__main__":
    main()
