"""How `allinone batch` scales with LocalCluster workers: the same files with 1, then N workers.

    python benchmarks/batch_scaling.py [--files 100] [--size 256] [--workers 1,2] [--model default]
                                       [--threads N]

Writes noisy grey uint8 PNGs (crops of scikit-image's camera, seeded Gaussian noise) to a temporary
folder, restores them with `run_batch` once per worker count into a fresh output folder, and prints
the wall time of each run (cluster start-up and model loading included) and the speedup over the
first. Figures are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage import data

from allinone.batch import BatchOptions, run_batch


def write_inputs(folder: Path, files: int, size: int) -> list[Path]:
    """`files` noisy crops of camera, `size` x `size`, as PNGs in `folder`."""
    camera = data.camera().astype(float)
    rng = np.random.default_rng(0)
    paths = []
    for n in range(files):
        y, x = rng.integers(0, camera.shape[0] - size + 1, 2)
        noisy = camera[y : y + size, x : x + size] + rng.normal(0, 25, (size, size))
        path = folder / f"image{n:03d}.png"
        iio.imwrite(path, np.clip(np.rint(noisy), 0, 255).astype(np.uint8))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, help="torch threads a worker (default: shared)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    options = BatchOptions(model=args.model, device="cpu", torch_threads=args.threads)
    threads = args.threads or "CPUs / workers"
    print(
        f"{args.files} files of {args.size}² grey uint8, model {args.model}, "
        f"{os.cpu_count()} CPUs, torch threads a worker: {threads}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        inputs = write_inputs(Path(tmp), args.files, args.size)
        first = None
        for workers in counts:
            start = time.perf_counter()
            report = run_batch(inputs, Path(tmp) / f"out{workers}", options, workers=workers)
            seconds = time.perf_counter() - start
            first = first or seconds
            print(
                f"workers {workers}: {seconds:.1f} s, {len(report.written)} written, "
                f"{len(report.failed)} failed, speedup {first / seconds:.2f}x"
            )


if __name__ == "__main__":
    main()
