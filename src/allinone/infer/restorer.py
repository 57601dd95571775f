"""The Restorer: the front door to restoring, analysing and fine-tuning."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from allinone.devices import resolve_device, resolve_precision
from allinone.errors import Cancelled, InputError, ModelFileError
from allinone.infer.axes import PlaneLayout
from allinone.infer.normalize import check_dtype, fit_normalization
from allinone.infer.pipeline import PlaneJob, Progress, finish_plane, is_cancelled, run_tiles
from allinone.infer.tiling import TileGrid
from allinone.models import AllInOneNet, Preset, build_network
from allinone.types import DEGRADATIONS
from allinone.weights import ModelCard, find_model, load_state, read_card, save_model

__all__ = ["Composition", "Progress", "Restorer"]

ProgressCallback = Callable[[int, int], None] | None


@dataclass
class Composition:
    """Which named degradations an image holds."""

    probabilities: dict[str, float]
    """Each name of `DEGRADATIONS` → probability in [0, 1] for the whole array."""
    maps: np.ndarray
    """(T, *lead_shape, h, w) per-region probabilities, one cell per `map_scale` pixels."""
    map_scale: tuple[float, float]
    """Image pixels per map cell along Y and X."""

    def dominant(self, threshold: float = 0.5) -> str | None:
        """The most probable type, or None when none reaches `threshold`."""
        name = max(self.probabilities, key=self.probabilities.get)
        return name if self.probabilities[name] >= threshold else None


def _drive(steps: Generator, progress: ProgressCallback, cancel) -> object:
    """Run a job generator to its end, reporting progress; return its result."""
    while True:
        try:
            update = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(update.done, update.total)
        if is_cancelled(cancel):
            steps.close()
            raise Cancelled("cancelled; nothing was written")


class Restorer:
    """A restoration network on a device, ready for N-D arrays of any supported dtype."""

    def __init__(
        self, net: AllInOneNet, card: ModelCard, device: str = "auto", precision: str = "auto"
    ):
        self.device = resolve_device(device)
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.card = card
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = "default", device: str = "auto", precision: str = "auto"
    ) -> Restorer:
        """Load shipped weights (`default`), a user model, a file, or a preset (`tiny`, `paper`)."""
        path = find_model(name_or_path)
        if path is None:
            net, card = _preset_network(str(name_or_path))
        else:
            card = read_card(path)
            net = _network_from_card(card, path)
            net.load_state_dict(_checked_state(net, path), strict=False)
        return cls(net, card, device=device, precision=precision)

    def _autocast(self):
        if self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def auto_tile(self) -> int:
        """A tile size that keeps memory modest on this device."""
        return 1024 if self.device.type == "cuda" else 512

    def auto_batch(self, grid: TileGrid) -> int:
        """Tiles per batch: enough to fill a GPU, one or two on a CPU."""
        pixels = grid.input_shape[0] * grid.input_shape[1]
        budget = 8 * 1024 * 1024 if self.device.type == "cuda" else 512 * 512
        return max(1, budget // pixels)

    def _plan(self, shape: tuple[int, ...], axes: str | None, tile: int | None, overlap: int):
        layout = PlaneLayout.of(shape, axes)
        if overlap < 0:
            raise InputError(f"overlap must be >= 0, got {overlap}")
        size = self.auto_tile() if tile is None else int(tile)
        if size < 0:
            raise InputError(f"tile must be >= 0 (0 = whole image), got {tile}")
        height, width = layout.plane_shape
        grid = TileGrid.plan(height, width, size, overlap, AllInOneNet.multiple)
        return layout, grid

    def restore_steps(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int = 32,
        cancel=None,
    ) -> Generator[Progress, None, np.ndarray]:
        """Restore `array` (same shape and dtype out), yielding `Progress` after each batch."""
        check_dtype(array.dtype)
        layout, grid = self._plan(array.shape, axes, tile, overlap)
        norm = fit_normalization(array)
        out = np.empty(array.shape, dtype=array.dtype)
        grey = not layout.rgb

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self._autocast():
                return self.net(x).restored

        def on_plane(job: PlaneJob, source: np.ndarray, blended: np.ndarray) -> None:
            layout.put(out, job.index, finish_plane(job, blended, norm, grey, source))

        yield from run_tiles(
            forward,
            layout,
            array,
            norm,
            grid,
            batch_size=self.auto_batch(grid),
            device=self.device,
            channels=3,
            scale=1,
            on_plane=on_plane,
            cancel=cancel,
            message="restoring",
        )
        return out

    def restore(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int = 32,
        progress: ProgressCallback = None,
        cancel=None,
    ) -> np.ndarray:
        """Restore an N-D array; see `restore_steps`. `tile=None` is automatic, 0 is one pass."""
        return _drive(self.restore_steps(array, axes, tile, overlap, cancel), progress, cancel)

    def analyze_steps(
        self, array, axes: str | None = None, tile: int | None = None, cancel=None
    ) -> Generator[Progress, None, Composition]:
        """Composition of `array`, yielding `Progress` after each batch of tiles."""
        check_dtype(array.dtype)
        layout, grid = self._plan(array.shape, axes, tile, 32)
        norm = fit_normalization(array)
        scale = AllInOneNet.multiple
        height, width = layout.plane_shape
        cells = (-(-height // scale), -(-width // scale))
        logits = np.zeros((len(DEGRADATIONS), *layout.lead_shape, *cells), dtype=np.float32)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), self._autocast():
                return self.net.analyze(x)

        def on_plane(job: PlaneJob, source: np.ndarray, blended: np.ndarray) -> None:
            plane = np.moveaxis(blended[: cells[0], : cells[1]], 2, 0)
            logits[(slice(None), *job.index)] = plane

        yield from run_tiles(
            forward,
            layout,
            array,
            norm,
            grid,
            batch_size=self.auto_batch(grid),
            device=self.device,
            channels=len(DEGRADATIONS),
            scale=scale,
            on_plane=on_plane,
            cancel=cancel,
            message="analysing",
        )
        mean_logits = logits.reshape(len(DEGRADATIONS), -1).mean(axis=1)
        probabilities = 1.0 / (1.0 + np.exp(-mean_logits))
        composition = {name: float(p) for name, p in zip(DEGRADATIONS, probabilities, strict=True)}
        maps = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        return Composition(composition, maps, (float(scale), float(scale)))

    def analyze(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        progress: ProgressCallback = None,
        cancel=None,
    ) -> Composition:
        """Per-type probabilities for the whole array and per-region maps; see `analyze_steps`."""
        return _drive(self.analyze_steps(array, axes, tile, cancel), progress, cancel)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights on the CPU."""
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def save(self, path: str | Path) -> Path:
        """Write the weights (`.safetensors`) and the JSON card; return the weights path."""
        return save_model(self.state_dict(), self.card, Path(path))


def _preset_network(name: str) -> tuple[AllInOneNet, ModelCard]:
    torch.manual_seed(0)
    net = build_network(name)
    card = ModelCard(
        name=name,
        preset=net.preset.to_dict(),
        description=f"preset {name}, untrained (random weights, seed 0)",
        training={"steps": 0},
    )
    return net, card


def _network_from_card(card: ModelCard, path: Path) -> AllInOneNet:
    try:
        preset = Preset.from_dict(card.preset)
        return build_network(preset)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the card's preset is invalid ({error})") from error


def _checked_state(net: AllInOneNet, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, checked to match the network exactly (the degradation net optional)."""
    state = load_state(path)
    expected = net.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not k.startswith("degradation_net"))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[0]})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        problems.append(f"non-finite values in {bad[0]}")
    if problems:
        raise ModelFileError(f"{path}: weights do not match the card: " + "; ".join(problems))
    return state
