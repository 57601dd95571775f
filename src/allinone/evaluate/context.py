"""What every protocol runs on: the samples, the methods, and the `Context` that scores them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from allinone import microscopy_baselines as mb
from allinone.errors import InputError
from allinone.evaluate.images import crop_multiple, read_rgb
from allinone.evaluate.metrics import psnr, psnr_y, ssim
from allinone.evaluate.results import Row, TaskResult
from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Restorer

ADAPT_SECONDS = 60.0
"""Default seconds of self-supervised adaptation per microscopy image (`--adapt-seconds`)."""
Log = Callable[[str], None]


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
    options: RestoreOptions = RestoreOptions()
    """How the model restores (`allinone eval`'s chain switches)."""
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

    def cbsd68(self) -> Iterator[tuple[int, Path, np.ndarray]]:
        """(index, path, photo cropped to a multiple of 16) of every CBSD68 photo in use."""
        for index, path in enumerate(self.files("CBSD68/clean")):
            yield index, path, crop_multiple(read_rgb(path), 16)

    def model(self) -> Method:
        name = f"{self.restorer.card.name} (ours{''.join(', ' + c for c in self.changes())})"
        axes = {2: "YX", 3: "YXC"}

        def restore(sample: Sample) -> np.ndarray:
            layout = axes[sample.clean.ndim]
            return self.restorer.restore(sample.degraded, axes=layout, options=self.options)

        return name, "model", restore

    def changes(self) -> list[str]:
        """The restore options away from their defaults, in words, for the method's name."""
        words = {
            "ensemble": "8-view ensemble",
            "tone": "tone keeping",
            "clipping": "clipping correction",
            "scene_haze": "scene haze",
            "local_gain": "local gain",
            "float_output": "float32 output",
        }
        changed = []
        for name, value in self.options.changed().items():
            if isinstance(value, bool):
                label = words.get(name, name)
                changed.append(label if value else f"no {label}")
            else:
                changed.append(f"{name} {value}")
        return changed

    def methods(
        self, input_label: str, *baselines: Method, after: tuple[Method, ...] = ()
    ) -> list[Method]:
        """The input, the classical baselines when enabled, the model, then `after`."""
        chosen = [(input_label, "baseline", lambda s: s.degraded)]
        if self.baselines:
            chosen += baselines
        return [*chosen, self.model(), *after]

    def microscopy_methods(self) -> list[Method]:
        """The input, blind and tuned TV and BM3D, a network trained from scratch on each image,
        the model, and the model adapted to each image (see `allinone.evaluate`)."""
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
        adapted: tuple[Method, ...] = ()
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
                    lambda s: mb.adapted(self.restorer, s.degraded, seconds, self.options),
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
