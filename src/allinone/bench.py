"""Throughput and memory benchmarks of the restoration pipeline (`allinone bench`).

For each model x device x precision x image size, an RGB uint8 image is restored with the
default tiling for the device, after one warm-up run: the median time of `repeats` runs gives the
throughput in megapixels a second. Also measured: the peak memory (CUDA: the most torch allocated;
host: the peak resident memory above the level before the run, sampled by a thread), the time of
one whole-image pass (the tiling overhead is tiled / whole-image time), a stack of slices (ZYX,
slices as large as the smallest size), FLOPs a pixel (counted by `FlopCounterMode` on one 256 x 256
input: convolutions and matrix products) and the fraction of the GPU's dense bf16 peak reached by
the network's work (tiles with their context margins). Everything reported was measured in the
run that wrote it; what could not be measured says why.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from allinone.devices import cpu_has_bf16

if TYPE_CHECKING:
    from allinone.models import AllInOneNet

FLOP_TILE = 256
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) by GPU name; the first name found in the device's wins."""


@dataclass
class Row:
    """One measured configuration (`note` says what could not be measured)."""

    model: str
    device: str
    precision: str
    image: str
    tile: int | str = ""
    megapixels_per_s: float | None = None
    seconds: float | None = None
    whole_seconds: float | None = None
    peak_gpu: int | None = None
    peak_host: int | None = None
    flops_per_pixel: float | None = None
    tflops: float | None = None
    peak_fraction: float | None = None
    warmup_seconds: float | None = None
    ratio: float | None = None
    note: str = ""


@dataclass
class BenchConfig:
    """What to measure."""

    models: Sequence[str] = ("default", "small", "paper")
    devices: Sequence[str] = ("auto",)
    precisions: Sequence[str] = ("fp32", "bf16")
    sizes: Sequence[int] = (256, 512, 1024, 2048, 4096)
    stack: int = 64
    repeats: int = 3
    tile: int | None = None
    compile: bool = False
    log: Callable[[str], None] = field(default=lambda message: None)


# --- measuring ----------------------------------------------------------------------------------


class PeakRSS:
    """Peak resident memory of this process above its level at start, sampled by a thread."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def available() -> bool:
        return os.path.exists("/proc/self/statm")

    @staticmethod
    def current() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start = self.current()
        self.peak = self.start
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())

    @property
    def growth(self) -> int:
        return self.peak - self.start


class Recorder:
    """Wraps a Restorer's network call to count the pixels it processes and the shapes it sees."""

    def __init__(self, restorer) -> None:
        self.restorer = restorer
        self.forward = restorer.tile_pass
        self.pixels = 0
        self.shapes: set[tuple[int, int]] = set()
        restorer.tile_pass = self

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.pixels += x.shape[0] * x.shape[2] * x.shape[3]
        self.shapes.add((int(x.shape[2]), int(x.shape[3])))
        return self.forward(x)

    def reset(self) -> None:
        self.pixels = 0
        self.shapes.clear()


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    restorer, image: np.ndarray, axes: str, tile: int | None, repeats: int
) -> tuple[float, float]:
    """(warm-up seconds, median seconds) of restoring `image`."""
    times = []
    for _ in range(1 + repeats):
        _synchronize(restorer.device)
        start = time.perf_counter()
        restorer.restore(image, axes=axes, tile=tile)
        _synchronize(restorer.device)
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, int | None]]:
    """Peak GPU bytes (torch's allocations) and host growth (bytes) over the block."""
    result: dict[str, int | None] = {"gpu": None, "host": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() if PeakRSS.available() else contextlib.nullcontext() as rss:
        yield result
    if device.type == "cuda":
        result["gpu"] = torch.cuda.max_memory_allocated(device)
    if rss is not None:
        result["host"] = rss.growth


def flops_per_pixel(net: torch.nn.Module, device: torch.device) -> float:
    """FLOPs a pixel of one forward pass on a 256 x 256 input (convolutions, matrix products)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, FLOP_TILE, FLOP_TILE, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    return counter.get_total_flops() / FLOP_TILE**2


def bf16_peak(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak in FLOP/s, or None when it is not in `BF16_PEAK_TFLOPS`."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in BF16_PEAK_TFLOPS.items():
        if key in name:
            return tflops * 1e12
    return None


def _test_image(size: int) -> np.ndarray:
    return np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _test_stack(count: int, size: int) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 4096, (count, size, size), dtype=np.uint16)


def measure_image(restorer, recorder: Recorder, image, axes, config: BenchConfig, row: Row) -> Row:
    """Fill `row` with the tiled timing, memory and FLOP rate of restoring `image`."""
    pixels = int(np.prod(image.shape[:-1] if axes.endswith("C") else image.shape))
    with peak_memory(restorer.device) as memory:
        row.warmup_seconds, row.seconds = timed(restorer, image, axes, config.tile, config.repeats)
    row.peak_gpu, row.peak_host = memory["gpu"], memory["host"]
    row.megapixels_per_s = pixels / row.seconds / 1e6
    work = recorder.pixels / (1 + config.repeats)
    if row.flops_per_pixel is not None:
        row.tflops = row.flops_per_pixel * work / row.seconds / 1e12
        peak = bf16_peak(restorer.device)
        row.peak_fraction = row.tflops * 1e12 / peak if peak else None
    return row


def measure_whole(restorer, recorder: Recorder, image: np.ndarray, config: BenchConfig, row: Row):
    """Time one whole-image pass; note when it did not fit the device's memory."""
    recorder.reset()
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        _, seconds = timed(restorer, image, "YXC", 0, max(1, config.repeats // 2))
    if len(recorder.shapes) == 1:
        row.whole_seconds = seconds
    else:
        row.note = "whole image did not fit in memory"


def measure_model(model: str, device: str, precision: str, config: BenchConfig) -> list[Row]:
    """Rows for every size and the stack, for one model on one device at one precision."""
    from allinone.infer.restorer import Restorer

    restorer = Restorer.from_pretrained(model, device=device, precision=precision)
    flops = flops_per_pixel(restorer.net, restorer.device)
    if config.compile:
        # the compiled module forwards its attributes to the network it wraps
        restorer.net = cast("AllInOneNet", torch.compile(restorer.net))
    recorder = Recorder(restorer)
    tile = config.tile if config.tile is not None else restorer.auto_tile()
    rows = []
    for size in config.sizes:
        config.log(f"{model} {device} {precision} {size}x{size}")
        row = Row(model, str(restorer.device), precision, f"{size}²", tile, flops_per_pixel=flops)
        recorder.reset()
        rows.append(measure_image(restorer, recorder, _test_image(size), "YXC", config, row))
        if size > tile:
            measure_whole(restorer, recorder, _test_image(size), config, row)
    if config.stack:
        size = min(config.sizes)
        config.log(f"{model} {device} {precision} stack {config.stack}x{size}x{size}")
        row = Row(model, str(restorer.device), precision, f"{config.stack}×{size}²", tile)
        row.flops_per_pixel = flops
        recorder.reset()
        rows.append(
            measure_image(restorer, recorder, _test_stack(config.stack, size), "ZYX", config, row)
        )
    return rows


# --- the run and its report ---------------------------------------------------------------------


def _skip_reason(device: str, precision: str) -> str | None:
    if device.startswith("cuda") and not torch.cuda.is_available():
        return "no CUDA device"
    if device.startswith("cuda") or precision == "fp32":
        return None
    if device == "cpu" and precision == "bf16":
        return None if cpu_has_bf16() else "this CPU has no native bf16 (it would be emulated)"
    return f"{precision} is only used on CUDA (and bf16 on the CPU)"


def _device_name(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_bench(config: BenchConfig) -> tuple[list[Row], list[str]]:
    """(measured rows, skipped configurations with the reason)."""
    rows, skipped = [], []
    for device in map(_device_name, config.devices):
        for precision in config.precisions:
            reason = _skip_reason(device, precision)
            for model in config.models:
                if reason:
                    skipped.append(f"{model} on {device} in {precision}: {reason}")
                    continue
                try:
                    rows.extend(measure_model(model, device, precision, config))
                except Exception as error:  # a configuration that fails is reported, not fatal
                    skipped.append(f"{model} on {device} in {precision}: failed ({error})")
    _add_ratios(rows, config.models[0])
    return rows, skipped


def _add_ratios(rows: list[Row], reference: str) -> None:
    base = {(r.device, r.precision, r.image): r for r in rows if r.model == reference}
    for row in rows:
        other = base.get((row.device, row.precision, row.image))
        if other and other.megapixels_per_s and row.megapixels_per_s:
            row.ratio = row.megapixels_per_s / other.megapixels_per_s


def _number(value: float | None, digits: int = 2, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value / scale:.{digits}f}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.0f}"


def to_markdown(rows: list[Row], skipped: list[str], config: BenchConfig, command: str) -> str:
    """The report: provenance, one table, and what was not measured."""
    devices = sorted({r.device for r in rows})
    names = [f"{d}: {torch.cuda.get_device_name(d)}" for d in devices if d.startswith("cuda")]
    reference = config.models[0]
    header = [
        "model",
        "device",
        "precision",
        "image",
        "tile",
        "MP/s",
        f"× {reference}",
        "peak GPU MiB",
        "peak host Δ MiB",
        "tiled s",
        "whole s",
        "tiling overhead",
        "kFLOP/px",
        "TFLOP/s",
        "% bf16 peak",
    ]
    if config.compile:
        header.append("compile s")
    lines = [
        "# Performance",
        "",
        f"Measured {datetime.date.today()} by `{command}`: torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
        + (f", {'; '.join(names)}" if names else "")
        + f". Times are medians of {config.repeats} timed run(s) after one warm-up.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        assert row.seconds is not None and row.warmup_seconds is not None  # every row is timed
        overhead = (
            f"{row.seconds / row.whole_seconds:.2f}×" if row.whole_seconds else row.note or "n/a"
        )
        cells = [
            row.model,
            row.device,
            row.precision,
            row.image,
            str(row.tile),
            _number(row.megapixels_per_s),
            _number(row.ratio),
            _mib(row.peak_gpu),
            _mib(row.peak_host),
            _number(row.seconds, 3),
            _number(row.whole_seconds, 3),
            overhead,
            _number(row.flops_per_pixel, 1, 1e3),
            _number(row.tflops, 3),
            _number(None if row.peak_fraction is None else 100 * row.peak_fraction, 1),
        ]
        if config.compile:
            cells.append(_number(row.warmup_seconds - row.seconds, 2))
        lines.append("| " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Not measured:", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"
