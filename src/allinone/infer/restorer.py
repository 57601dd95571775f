"""The Restorer: a network on a device, the front door to restoring and analysing images.

Fine-tuning, one layer above, adapts a Restorer's network (`allinone.train.finetune`)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import expit

from allinone.devices import resolve_device, resolve_precision
from allinone.errors import InputError
from allinone.infer.auto_exposure import (
    choose_normalization,
    is_photo,
    read_windows,
    under_exposure,
)
from allinone.infer.axes import PlaneLayout
from allinone.infer.chain import RestoreChain, scene_judged
from allinone.infer.clipping import noise_sigma
from allinone.infer.ensemble import FLIPS, self_ensemble
from allinone.infer.local_gain import lift, plane_top
from allinone.infer.normalize import Normalization, check_dtype, check_scaling, fit_normalization
from allinone.infer.options import RestoreOptions, check_tiling
from allinone.infer.pipeline import PlaneSource, Rows, restored_rows, run_tiles
from allinone.infer.scene import HAZE, plane_overview
from allinone.infer.tiling import TileGrid, round_up
from allinone.infer.tone import GUARD_REACH
from allinone.jobs import Cancel, Progress, ProgressCallback, drive
from allinone.loading import load_estimator, load_network
from allinone.models import AllInOneNet
from allinone.models.exposure import ExposureNet
from allinone.tone_curve import ToneCurve
from allinone.types import DEGRADATIONS
from allinone.weights import ModelCard, save_model

__all__ = ["Composition", "Restorer"]


@dataclass
class Composition:
    """Which named degradations an image holds."""

    probabilities: dict[str, float]
    """Each name of `DEGRADATIONS` → probability in [0, 1] for the whole array."""
    maps: np.ndarray
    """(T, *lead_shape, h, w) per-region probabilities, one cell per `map_scale` pixels."""
    map_scale: tuple[float, float]
    """Image pixels per map cell along Y and X."""
    noise_level: float | None = None
    """The standard deviation of the image's noise in its own intensity units (see
    `Restorer._noise_level`); None where it cannot be read."""
    under_exposure: float | None = None
    """For an 8-bit colour photo, the stops by which undoing the darkening that the exposure
    estimator reads would brighten it (`allinone.infer.auto_exposure.under_exposure`; restore's
    ``"auto"`` corrects from `STOPS`); None for other images."""

    def dominant(self, threshold: float = 0.5) -> str | None:
        """The most probable type, or None when none reaches `threshold`."""
        name = max(self.probabilities, key=self.probabilities.__getitem__)
        return name if self.probabilities[name] >= threshold else None


class Restorer:
    """A restoration network on a device, ready for N-D arrays of any supported dtype."""

    def __init__(
        self, net: AllInOneNet, card: ModelCard, device: str = "auto", precision: str = "auto"
    ):
        self.device = resolve_device(device)
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, self.device)
        self.card = card
        # torch's stubs omit Module.to's memory_format keyword
        net = net.to(self.device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.net = net.eval()

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | Path = "default", device: str = "auto", precision: str = "auto"
    ) -> Restorer:
        """Load shipped weights (`default`), a user model, a file, or a preset (`tiny`, `paper`)."""
        net, card = load_network(name_or_path)
        return cls(net, card, device=device, precision=precision)

    def _autocast(self):
        if self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def auto_tile(self) -> int:
        """A tile size that keeps memory modest on this device."""
        return 1024 if self.device.type == "cuda" else 512

    @functools.cached_property
    def reach(self) -> int:
        """The least context of a tile, in pixels: the network's reach (`AllInOneNet.reach`)."""
        return self.net.reach()

    def auto_batch(self, grid: TileGrid) -> int:
        """Tiles per batch: enough to fill a GPU, one or two on a CPU."""
        pixels = grid.input_shape[0] * grid.input_shape[1]
        budget = 8 * 1024 * 1024 if self.device.type == "cuda" else 512 * 512
        return max(1, budget // pixels)

    def _plan(self, shape: tuple[int, ...], axes: str | None, tile: int | None, overlap: int):
        layout = PlaneLayout.of(shape, axes)
        check_tiling(tile, overlap)
        size = self.auto_tile() if tile is None else int(tile)
        height, width = layout.plane_shape
        grid = TileGrid.plan(height, width, size, overlap, AllInOneNet.multiple, self.reach)
        return layout, grid

    @contextlib.contextmanager
    def _job(self) -> Iterator[None]:
        """Put the model back on its device after a job that fell back to the CPU."""
        device, dtype = self.device, self.autocast_dtype
        try:
            yield
        finally:
            if self.device != device:
                self.device, self.autocast_dtype = device, dtype
                self.net.to(device)

    def _use_cpu(self) -> torch.device:
        """Move the model to the CPU, for the rest of a job that ran out of device memory."""
        self.device = torch.device("cpu")
        self.autocast_dtype = resolve_precision(self.precision, self.device)
        self.net.to(self.device)
        return self.device

    def _run(self, forward, source: PlaneSource, grid: TileGrid, **options) -> Generator:
        with self._job():
            yield from run_tiles(
                forward,
                source,
                grid,
                batch_size=self.auto_batch(grid),
                device=self.device,
                fallback=self._use_cpu,
                **options,
            )

    def tile_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on a batch of (B, 3, h, w) tiles on the device: (restored, composition
        logits (B, T)), as the restore chain's steps take them (`allinone.infer.chain`)."""
        with torch.inference_mode():
            with self._autocast():
                output = self.net(x)
            return output.restored, output.logits

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """A (1, 3, h, w) CPU overview on the device, its edges repeated to the net's multiple."""
        h, w = x.shape[-2:]
        m = AllInOneNet.multiple
        padded = F.pad(x, (0, round_up(w, m) - w, 0, round_up(h, m) - h), mode="replicate")
        return padded.to(self.device).contiguous(memory_format=torch.channels_last)

    def overview_pass(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network on one (1, 3, h, w) CPU overview (`allinone.infer.scene`): (restored,
        composition logits (1, T)) on the CPU."""
        h, w = x.shape[-2:]
        with torch.inference_mode(), self._autocast():
            output = self.net(self._padded(x))
        return output.restored[..., :h, :w].float().cpu(), output.logits.float().cpu()

    @functools.cached_property
    def exposure_estimator(self) -> ExposureNet:
        """The shipped exposure estimator (`allinone.models.exposure`), on the CPU."""
        return load_estimator()

    def exposure_curve(self, view: np.ndarray) -> ToneCurve:
        """The darkening the exposure estimator reads in an (h, w, 3) overview in [0, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(view.transpose(2, 0, 1), dtype=np.float32))
        return self.exposure_estimator.curve(x[None])

    def _noise_level(self, array, layout: PlaneLayout, norm: Normalization) -> float | None:
        """The standard deviation of white noise in `array`, in its intensity units: the median
        over the windows of `read_windows` (middle plane) of Donoho's estimate (`noise_sigma`,
        blocks at an integer dtype's ends or holding NaN left out), in `norm`'s network units
        times its scale; windows without a finite pixel do not count; None for planes thinner
        than 2 pixels or without finite pixels. Texture raises it a little: clean photos read
        about 1-3 levels of 255."""
        bounds = norm.clip_bounds()
        levels = [
            noise_sigma(torch.from_numpy(norm.forward(window)).permute(2, 0, 1)[None], bounds)
            for window in read_windows(array, layout)
            if min(window.shape[:2]) >= 2 and np.isfinite(window).any()
        ]
        return float(torch.cat(levels).median()) * norm.scale if levels else None

    def _overview_haze(self, source: PlaneSource, encode: Callable) -> tuple[np.ndarray, float]:
        """(the haze logit `encode` gives each plane's overview, shaped like the planes; the
        weight it deserves beside the tiles': 1 - 1 / shrink factor), for planes with an overview
        (`scene_judged`)."""
        layout = source.layout
        values = np.zeros(layout.lead_shape, dtype=np.float32)
        factor = 1
        for index in layout.indices():
            chunks = source.input_chunks(index, source.fill_value(index))
            view = plane_overview(chunks, layout.plane_shape, source.norm)
            assert view is not None  # the planes of `scene_judged` layouts have overviews
            factor = view.factor
            values[index] = encode(self._padded(view.image)).float().mean(dim=(2, 3))[0, HAZE]
        return values, 1 - 1 / factor

    def _restore_with(
        self, array, grid: TileGrid, chain: RestoreChain, out, cancel: Cancel
    ) -> Generator[Progress, None, np.ndarray]:
        layout, norm = chain.layout, chain.norm
        height, width = layout.plane_shape

        def on_rows(rows: Rows) -> None:
            if rows.start < height:
                restored = restored_rows(rows, norm, layout.rgb, height, width, out.dtype)
                span = slice(rows.start, rows.start + len(restored))
                layout.put(out, rows.plane.index, restored, rows=span)

        trim = max(grid.context - GUARD_REACH, 0)
        yield from self._run(
            chain.tile_steps(self.tile_pass, trim),
            PlaneSource(layout, array, norm, chain.scene_hook(self.overview_pass), noise=True),
            grid,
            channels=3,
            scale=1,
            on_rows=on_rows,
            cancel=cancel,
            message="restoring",
        )
        return out

    def restore_steps(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int = 32,
        cancel: Cancel = None,
        out=None,
        scaling: str = "auto",
        ensemble: bool = False,
        scene_haze: bool = True,
        *,
        options: RestoreOptions | None = None,
    ) -> Generator[Progress, None, np.ndarray]:
        """Restore `array` (same shape out, and same dtype unless `options.float_output` makes
        an integer image's float32), yielding `Progress` after each batch.

        `array` may be a NumPy array, a memory map, a zarr or a dask array: it is read a band of
        tiles at a time. Results go into `out` (a preallocated array, memory map or zarr array of
        the result's shape and dtype) when given, as they are finished, and `out` is returned.
        `options` says how (`RestoreOptions`: intensity scaling, which steps of the restore chain
        run, tiling); without it, `tile`, `overlap`, `scaling`, `ensemble` and `scene_haze` are
        those options, the others at their defaults (see `RestoreOptions` for each).
        """
        options = RestoreOptions.given(
            options,
            tile=tile,
            overlap=overlap,
            scaling=scaling,
            ensemble=ensemble,
            scene_haze=scene_haze,
        )
        check_dtype(array.dtype)
        layout, grid = self._plan(array.shape, axes, options.tile, options.overlap)
        out = _output_for(array, out, options.output_dtype(array.dtype))
        norm = choose_normalization(array, layout, options.scaling, self.exposure_curve)
        chain = RestoreChain(options, layout, norm)
        return (yield from self._restore_with(array, grid, chain, out, cancel))

    def restore(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int = 32,
        progress: ProgressCallback | None = None,
        cancel: Cancel = None,
        out=None,
        scaling: str = "auto",
        ensemble: bool = False,
        scene_haze: bool = True,
        *,
        options: RestoreOptions | None = None,
    ) -> np.ndarray:
        """Restore an N-D array; see `restore_steps`. `tile=None` is automatic, 0 is one pass."""
        steps = self.restore_steps(
            array, axes, tile, overlap, cancel, out, scaling, ensemble, scene_haze, options=options
        )
        return drive(steps, progress, cancel)

    def restore_dask(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        overlap: int = 32,
        scaling: str = "auto",
        ensemble: bool = False,
        scene_haze: bool = True,
        *,
        options: RestoreOptions | None = None,
    ):
        """A lazy dask array: `array` (a dask array) restored, block by block, when computed;
        the options as `restore_steps` takes them.

        Blocks hold whole planes: `array` is rechunked so that Y, X (and colour) are single
        chunks, keeping its chunks along the other axes, so a block is restored exactly as
        `restore` restores it and the result equals `restore(array)` (overlapping chunked planes
        instead would tile differently from `restore`). A block costs its planes in the source
        dtype plus the tile working memory. The normalisation is fitted now, from the same sample
        as `restore`'s. Blocks run one at a time on this Restorer's device; compute with the
        threaded or synchronous scheduler (the graph holds this Restorer), or use `allinone batch`
        to spread files over a cluster.
        """
        import dask.array as da
        from dask.base import tokenize

        options = RestoreOptions.given(
            options,
            tile=tile,
            overlap=overlap,
            scaling=scaling,
            ensemble=ensemble,
            scene_haze=scene_haze,
        )
        array = da.asarray(array)
        check_dtype(array.dtype)
        layout, _ = self._plan(array.shape, axes, options.tile, options.overlap)
        norm = choose_normalization(array, layout, options.scaling, self.exposure_curve)
        planes = array.rechunk({i: -1 for i in range(array.ndim) if i not in layout.lead_axes})
        dtype = options.output_dtype(array.dtype)
        lock = threading.Lock()

        def restore_block(block: np.ndarray) -> np.ndarray:
            block_layout, grid = self._plan(block.shape, layout.axes, options.tile, options.overlap)
            chain = RestoreChain(options, block_layout, norm)
            out = np.empty(block.shape, dtype=dtype)
            with lock:
                return drive(self._restore_with(block, grid, chain, out, None))

        token = tokenize(planes.name, layout.axes, dataclasses.astuple(options), id(self))
        name = "allinone-restore-" + token
        meta = np.empty((0,) * array.ndim, dtype=dtype)
        return planes.map_blocks(restore_block, dtype=dtype, meta=meta, name=name)

    def analyze_steps(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        cancel: Cancel = None,
        scaling: str = "auto",
        flips: bool = True,
    ) -> Generator[Progress, None, Composition]:
        """Composition of `array`, yielding `Progress` after each batch of tiles.

        ``scaling="auto"`` shows the network an 8-bit colour photo by its dtype's range, so that
        under-exposure can be seen (stretched by percentiles it looks well exposed), and any
        other image by its percentiles (so that dim fluorescence is not taken for low light).
        `flips` averages the logits over the tile and its three flips (`ensemble.FLIPS`): four
        passes of the encoder, and about 3 points more top-1 accuracy on single degradations
        (fewer blurred images taken for another type; see the README).
        Grey planes scaled by their percentiles are read as restore sees them, dim regions
        lifted (`allinone.infer.local_gain`). On colour planes the haze logits of the tiles (map
        and whole) are mixed with that of the plane's overview (`allinone.infer.scene`), the
        more so the larger the plane: tile by tile, the haze of a large image looks like blur.
        A plane shrunk k times weighs the overview 1 - 1/k.
        """
        check_dtype(array.dtype)
        check_scaling(scaling)
        layout, grid = self._plan(array.shape, axes, tile, 32)
        if scaling == "auto":
            scaling = "range" if is_photo(array.dtype, layout) else "percentile"
        norm = fit_normalization(array, scaling)
        scale = AllInOneNet.multiple
        height, width = layout.plane_shape
        cells = (-(-height // scale), -(-width // scale))
        logits = np.zeros((len(DEGRADATIONS), *layout.lead_shape, *cells), dtype=np.float32)

        top = plane_top(norm, layout.rgb)

        def encode(x: torch.Tensor) -> torch.Tensor:
            if top is not None:
                x = lift(x, top)[0]
            with torch.inference_mode(), self._autocast():
                return self.net.analyze(x)

        def forward(x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
            return self_ensemble(encode, x, FLIPS) if flips else encode(x)

        def on_rows(rows: Rows) -> None:
            count = min(len(rows.blended), cells[0] - rows.start)
            if count > 0:
                span = slice(rows.start, rows.start + count)
                plane = np.moveaxis(rows.blended[:count, : cells[1]], 2, 0)
                key: tuple[int | slice, ...] = (slice(None), *rows.plane.index, span)
                logits[key] = plane

        source = PlaneSource(layout, array, norm)
        yield from self._run(
            forward,
            source,
            grid,
            channels=len(DEGRADATIONS),
            scale=scale,
            on_rows=on_rows,
            cancel=cancel,
            message="analysing",
        )
        if scene_judged(layout):
            overview_logits, weight = self._overview_haze(source, forward)
            logits[HAZE] = (1 - weight) * logits[HAZE] + weight * overview_logits[..., None, None]
        mean_logits = logits.reshape(len(DEGRADATIONS), -1).mean(axis=1)
        probabilities = expit(mean_logits)
        composition = {name: float(p) for name, p in zip(DEGRADATIONS, probabilities, strict=True)}
        maps = expit(logits).astype(np.float32)
        noise = self._noise_level(array, layout, norm)
        stops = (
            under_exposure(array, layout, self.exposure_curve)[1]
            if is_photo(array.dtype, layout)
            else None
        )
        return Composition(composition, maps, (float(scale), float(scale)), noise, stops)

    def analyze(
        self,
        array,
        axes: str | None = None,
        tile: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: Cancel = None,
        scaling: str = "auto",
        flips: bool = True,
    ) -> Composition:
        """Per-type probabilities for the whole array and per-region maps; see `analyze_steps`."""
        steps = self.analyze_steps(array, axes, tile, cancel, scaling, flips)
        return drive(steps, progress, cancel)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights on the CPU."""
        return {k: v.detach().cpu() for k, v in self.net.state_dict().items()}

    def save(self, path: str | Path) -> Path:
        """Write the weights (`.safetensors`) and the JSON card; return the weights path."""
        return save_model(self.state_dict(), self.card, Path(path))


def _output_for(array, out, dtype: np.dtype):
    """`out` checked against `array`'s shape and the result's `dtype`, or a new in-memory
    array."""
    if out is None:
        return np.empty(array.shape, dtype=dtype)
    if tuple(out.shape) != tuple(array.shape) or np.dtype(out.dtype) != dtype:
        raise InputError(
            f"out must have the image's shape {tuple(array.shape)} and dtype {dtype}, "
            f"not {tuple(out.shape)} and {out.dtype}"
        )
    return out
