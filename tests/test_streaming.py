"""Streaming restoration: bounded memory, `out=` destinations, out-of-memory recovery."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from conftest import stand_in

from allinone.errors import InputError
from allinone.infer.axes import PlaneLayout
from allinone.infer.normalize import fit_normalization
from allinone.infer.pipeline import PlaneSource, finite_median, run_tiles
from allinone.infer.restorer import Restorer
from allinone.infer.tiling import TileGrid
from allinone.tone_curve import ToneCurve


def _stand_in_of(value: int) -> int:
    """What `x * 0.5 - 0.25` (darker, so never held back as a brightening) makes of a constant
    grey uint8 plane at the default scaling."""
    norm = fit_normalization(np.full((4, 4), value, np.uint8))
    return int(norm.inverse(norm.forward(np.array([value])) * 0.5 - 0.25)[0])


_STAND_IN_OF_100 = _stand_in_of(100)


@pytest.fixture(scope="module")
def tiny() -> Restorer:
    return Restorer.from_pretrained("tiny", device="cpu")


def _stand_in(x: torch.Tensor) -> torch.Tensor:
    """A cheap per-pixel tile pass, so that large planes stream through quickly on a CPU."""
    return x * 0.5 - 0.25


def _peak_bytes(restorer: Restorer, path, height: int, width: int, channels: int = 1):
    """(peak traced host memory, the restored value) of restoring a constant uint8
    (1, height, width[, 3]) memmap into another."""
    shape = (1, height, width) + ((channels,) if channels > 1 else ())
    source = np.lib.format.open_memmap(path / f"in{height}.npy", "w+", np.uint8, shape)
    source[:] = 100
    out = np.lib.format.open_memmap(path / f"out{height}.npy", "w+", np.uint8, source.shape)
    axes = "ZYXC" if channels > 1 else "ZYX"
    tracemalloc.start()
    try:
        result = restorer.restore(source, axes=axes, tile=256, out=out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result is out
    values = np.unique(out[0, ::97, ::89])
    assert len(values) == 1
    return peak, int(values[0])


def test_memory_depends_on_the_tile_not_the_image(tmp_path, monkeypatch):
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    stand_in(monkeypatch, restorer, _stand_in)
    short, _ = _peak_bytes(restorer, tmp_path, 2048, 1024)
    tall, value = _peak_bytes(restorer, tmp_path, 16384, 1024)
    assert value == _STAND_IN_OF_100
    plane_float32 = 16384 * 1024 * 4
    assert tall < plane_float32 / 4
    assert tall < 1.5 * short


def test_colour_memory_with_the_scene_pass_depends_on_the_tile(tmp_path, monkeypatch, haze_pass):
    """The scene-scale and exposure overviews of a colour plane are built from row chunks too."""
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    stand_in(monkeypatch, restorer, _stand_in)
    monkeypatch.setattr(restorer, "exposure_curve", lambda view: ToneCurve(1.0, 1.0))
    monkeypatch.setattr(restorer, "overview_pass", haze_pass(50.0))
    short, dehazed = _peak_bytes(restorer, tmp_path, 2048, 1024, channels=3)
    tall, value = _peak_bytes(restorer, tmp_path, 16384, 1024, channels=3)
    assert value == dehazed < _STAND_IN_OF_100
    plane_float32 = 16384 * 1024 * 3 * 4
    assert tall < plane_float32 / 4
    assert tall < 1.5 * short


def test_memmap_into_out_equals_in_memory(tiny, tmp_path):
    data = np.random.default_rng(0).integers(0, 4000, (2, 96, 80), dtype=np.uint16)
    source = np.lib.format.open_memmap(tmp_path / "in.npy", "w+", data.dtype, data.shape)
    source[:] = data
    out = np.lib.format.open_memmap(tmp_path / "out.npy", "w+", data.dtype, data.shape)
    streamed = tiny.restore(source, axes="ZYX", tile=32, overlap=16, out=out)
    assert streamed is out
    np.testing.assert_array_equal(np.asarray(out), tiny.restore(data, tile=32, overlap=16))


def test_out_must_match(tiny):
    image = np.zeros((16, 16), dtype=np.uint8)
    with pytest.raises(InputError, match="shape"):
        tiny.restore(image, out=np.zeros((16, 17), dtype=np.uint8))
    with pytest.raises(InputError, match="dtype"):
        tiny.restore(image, out=np.zeros((16, 16), dtype=np.uint16))


def test_finite_median_matches_numpy():
    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 1000, 1001):
        values = (rng.normal(size=size) * 10.0 ** rng.integers(-20, 20, size)).astype(np.float32)
        values[rng.random(size) < 0.2] = np.nan
        values[rng.random(size) < 0.1] = -np.inf
        expected = np.nanmedian(np.where(np.isfinite(values), values, np.nan))
        parts = np.array_split(values, 3)
        np.testing.assert_array_equal(finite_median(lambda parts=parts: parts), expected)


def _run(image: np.ndarray, forward, device: torch.device, fallback=None, tile: int = 256):
    layout = PlaneLayout.of(image.shape)
    norm = fit_normalization(image)
    grid = TileGrid.plan(*layout.plane_shape, tile, 16, 8)
    blended = np.zeros((*image.shape, 3), dtype=np.float32)

    def on_rows(rows) -> None:
        count = min(len(rows.blended), image.shape[1] - rows.start)
        blended[rows.plane.index][rows.start : rows.start + count] = rows.blended[
            :count, : image.shape[2]
        ]

    steps = run_tiles(
        lambda x, noise: forward(x),
        PlaneSource(layout, image, norm),
        grid,
        batch_size=8,
        device=device,
        channels=3,
        scale=1,
        on_rows=on_rows,
        fallback=fallback,
    )
    for _ in steps:
        pass
    return blended


def test_out_of_memory_halves_the_batch_then_shrinks_tiles():
    image = np.random.default_rng(1).integers(0, 255, (2, 300, 260), dtype=np.uint8)
    expected = _run(image, _stand_in, torch.device("cpu"))
    seen: list[tuple[int, int]] = []

    def frugal(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.shape[0], x.shape[-1]))
        if x.shape[0] > 2 or x.shape[-1] > 200:
            raise torch.cuda.OutOfMemoryError("simulated")
        return _stand_in(x)

    result = _run(image, frugal, torch.device("cpu"))
    np.testing.assert_allclose(result, expected, atol=1e-6)
    assert max(b for b, w in seen if w <= 200) == 1
    grid = TileGrid.plan(300, 260, 256, 16, 8)
    first = min(8, 2 * len(grid.tiles()))  # two planes
    width = grid.input_shape[1]
    assert first >= 4 and (first, width) in seen and (first // 2, width) in seen


def test_out_of_memory_falls_back_to_the_cpu_with_a_warning():
    image = np.random.default_rng(2).integers(0, 255, (1, 140, 150), dtype=np.uint8)
    expected = _run(image, _stand_in, torch.device("cpu"))

    def gpu_full(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise torch.cuda.OutOfMemoryError("simulated")
        return _stand_in(x)

    with pytest.warns(RuntimeWarning, match="CPU"):
        result = _run(image, gpu_full, torch.device("meta"), fallback=lambda: torch.device("cpu"))
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_out_of_memory_on_the_cpu_is_raised():
    image = np.zeros((1, 64, 64), dtype=np.uint8)

    def never(x: torch.Tensor) -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("simulated")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        _run(image, never, torch.device("cpu"), fallback=lambda: torch.device("cpu"))


def test_restorer_goes_on_on_the_cpu_then_returns_to_its_device(monkeypatch):
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    restorer.device = torch.device("meta")
    moves: list[torch.device] = []
    monkeypatch.setattr(
        restorer.net, "to", lambda device: moves.append(torch.device(device)) or restorer.net
    )

    def gpu_full(x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise torch.cuda.OutOfMemoryError("simulated")
        return _stand_in(x)

    stand_in(monkeypatch, restorer, gpu_full)
    image = np.full((40, 50), 100, dtype=np.uint8)
    with pytest.warns(RuntimeWarning, match="going on on the CPU"):
        restored = restorer.restore(image, tile=0)
    assert np.all(restored == _STAND_IN_OF_100)
    assert moves == [torch.device("cpu"), torch.device("meta")]
    assert restorer.device == torch.device("meta")
