"""Peak resident memory of `allinone restore` from TIFF to TIFF, against the file's size.

    python benchmarks/streaming_memory.py [--sizes 32,1024] [--model tiny] [--tile 256]

For each size (MiB) it writes a uint16 ZYX ImageJ stack of 1024 x 1024 planes (Poisson noise
around a pattern, written through a memory map so that this script stays small too), runs
`allinone restore IN -o OUT` in a child process with the same model and tile size, and prints the
child's peak resident set size (its VmHWM), its wall time and whether the output
kept the input's shape, dtype and Z spacing. The files go to a temporary folder (--workdir) and
are removed afterwards.

`--network stand-in` replaces the network's pass on each batch of tiles by a per-pixel map
(x / 2 - 1/4) and keeps everything else (reading, normalisation, tiling, blending, writing): a
gigabyte takes hours through a real network on two CPU cores, and the network's own memory
(weights and one batch of tiles) does not depend on the file's size; the `tiny` rows measure it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

PLANE = 1024


def write_stack(path: Path, mib: int) -> tuple[int, int, int]:
    """A uint16 ZYX stack of about `mib` MiB at `path`; return its shape."""
    planes = max(1, mib * 2**20 // (PLANE * PLANE * 2))
    shape = (planes, PLANE, PLANE)
    stack = tifffile.memmap(
        path, shape=shape, dtype=np.uint16, imagej=True, metadata={"axes": "ZYX", "spacing": 2.0}
    )
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:PLANE, 0:PLANE]
    pattern = 100 + 400 * (np.sin(xx / 23.0) * np.cos(yy / 31.0)) ** 2
    for z in range(planes):
        stack[z] = rng.poisson(pattern * (1 + 0.1 * np.sin(z / 5.0)))
    stack.flush()
    del stack
    return shape


CHILD = """
import sys
from allinone.cli import main

def peak_mib():
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["VmHWM"].split()[0]) / 1024

if sys.argv[1] == "stand-in":
    import torch
    from allinone.infer.restorer import Restorer
    from allinone.types import DEGRADATIONS

    def stand_in(self, x):
        return x * 0.5 - 0.25, torch.zeros(len(x), len(DEGRADATIONS))

    Restorer.tile_pass = stand_in
code = main(sys.argv[2:])
print(f"peak {peak_mib():.1f}", file=sys.stderr)
sys.exit(code)
"""


def run_restore(
    source: Path, output: Path, model: str, tile: int, stand_in: bool
) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of one `allinone restore` in a child process.

    The peak is the child's own VmHWM, read by the child as it ends: getrusage's ru_maxrss of a
    child would also count the pages it shared with this process between fork and exec."""
    command = [sys.executable, "-c", CHILD, "stand-in" if stand_in else "model", "restore"]
    command += [str(source), "-o", str(output), "--model", model, "--device", "cpu"]
    command += ["--tile", str(tile)]
    started = time.perf_counter()
    child = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"restore failed: {child.stderr}")
    peak = float(child.stderr.strip().splitlines()[-1].split()[1])
    return peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,1024", help="stack sizes in MiB (default 32,1024)")
    parser.add_argument("--model", default="tiny", help="default: tiny")
    parser.add_argument("--tile", type=int, default=256, help="default: 256")
    parser.add_argument("--network", choices=("model", "stand-in"), default="model")
    parser.add_argument("--workdir", default=None, help="where the stacks go (default: a temp)")
    args = parser.parse_args()
    import torch

    print(
        f"`python benchmarks/streaming_memory.py --sizes {args.sizes} --model {args.model} "
        f"--tile {args.tile} --network {args.network}`, {time.strftime('%Y-%m-%d')}, "
        f"torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores\n"
    )
    print("| stack (MiB) | shape | peak RSS (MiB) | wall (s) | output kept shape, dtype, spacing |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        for mib in (int(size) for size in args.sizes.split(",")):
            source, output = Path(folder) / "in.tif", Path(folder) / "out.tif"
            shape = write_stack(source, mib)
            stand_in = args.network == "stand-in"
            peak, seconds = run_restore(source, output, args.model, args.tile, stand_in)
            with tifffile.TiffFile(output) as tif:
                kept = (
                    tif.series[0].shape == shape
                    and tif.series[0].dtype == np.uint16
                    and tif.imagej_metadata.get("spacing") == 2.0
                )
            size = source.stat().st_size / 2**20
            print(
                f"| {size:.0f} | {'x'.join(map(str, shape))} | {peak:.0f} | {seconds:.0f} | "
                f"{'yes' if kept else 'NO'} |",
                flush=True,
            )
            source.unlink()
            output.unlink()


if __name__ == "__main__":
    main()
