"""Tile grids, reflection, blending, and tiled restoration matching whole-image restoration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_restorer, randomize_zero_init
from skimage import data

from allinone.infer.axes import PlaneLayout
from allinone.infer.normalize import Normalization
from allinone.infer.pipeline import PlaneSource, run_tiles
from allinone.infer.tiling import TileGrid, reflect_indices
from allinone.models import build_network


def test_reflect_indices_examples() -> None:
    np.testing.assert_array_equal(reflect_indices(-3, 8, 5), [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(reflect_indices(0, 4, 4), [0, 1, 2, 3])
    np.testing.assert_array_equal(reflect_indices(-2, 3, 1), [0, 0, 0, 0, 0])
    np.testing.assert_array_equal(reflect_indices(-3, 5, 2), [1, 0, 1, 0, 1, 0, 1, 0])
    assert reflect_indices(5, 5, 3).size == 0


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 13])
@pytest.mark.parametrize("pad", [0, 1, 4, 7, 30])
def test_reflect_indices_match_numpy_reflect_padding(size: int, pad: int) -> None:
    expected = np.pad(np.arange(size), pad, mode="reflect" if size > 1 else "edge")
    got = reflect_indices(-pad, size + pad, size)
    np.testing.assert_array_equal(got, expected)
    assert got.min() >= 0 and got.max() < size


GRIDS = [
    # height, width, tile, overlap
    (1, 1, 256, 32),
    (5, 300, 64, 32),
    (64, 64, 64, 0),
    (100, 37, 16, 8),
    (300, 517, 128, 32),
    (1024, 1024, 256, 32),
    (250, 250, 10, 3),
    (90, 130, 0, 32),
    (33, 200, 16, 64),
]


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), GRIDS)
def test_tile_grid_covers_the_padded_plane(height, width, tile, overlap) -> None:
    grid = TileGrid.plan(height, width, tile, overlap)
    ph, pw = grid.padded
    assert ph % 8 == 0 and pw % 8 == 0 and 0 <= ph - height < 8 and 0 <= pw - width < 8
    assert grid.context % 8 == 0 and grid.context >= overlap
    assert grid.core_h % 8 == 0 and grid.core_w % 8 == 0
    if tile <= 0:
        assert (grid.core_h, grid.core_w) == (ph, pw)
    tiles = grid.tiles()
    assert len(set(tiles)) == len(tiles)
    coverage = np.zeros((ph, pw))
    weights = np.zeros((ph, pw))
    plane = np.arange(height * width, dtype=np.float32).reshape(height, width)
    for t in tiles:
        assert t.y % 8 == 0 and t.x % 8 == 0
        assert t.y >= 0 and t.y + grid.core_h <= ph and t.x >= 0 and t.x + grid.core_w <= pw
        weight = grid.weight(t)
        assert weight.shape == (grid.core_h, grid.core_w)
        assert weight.min() > 0 and weight.max() <= 1
        coverage[t.y : t.y + grid.core_h, t.x : t.x + grid.core_w] += 1
        weights[t.y : t.y + grid.core_h, t.x : t.x + grid.core_w] += weight
        assert grid.read(plane, t).shape == grid.input_shape
    assert coverage.min() >= 1
    assert weights.min() > 0
    # all tiles have one input size, so they batch together
    assert grid.input_shape == (grid.core_h + 2 * grid.context, grid.core_w + 2 * grid.context)


def test_tile_grid_sizes() -> None:
    grid = TileGrid.plan(1024, 1024, 256, 32)
    assert (grid.core_h, grid.context, grid.blend) == (264, 32, 8)  # 256 each + the blend band
    assert len(grid.tiles()) == 16
    uneven = TileGrid.plan(1000, 1000, 512, 32)
    assert uneven.core_h == 504 and len(uneven.tiles()) == 4  # equal cores, no sliver
    tiny = TileGrid.plan(100, 100, 3, 0)
    assert tiny.core_h == 16 and tiny.blend == 0  # at least two multiples
    whole = TileGrid.plan(100, 37, 0, 0)
    assert len(whole.tiles()) == 1 and whole.input_shape == (104, 40)


def test_the_context_covers_the_networks_reach() -> None:
    reaching = TileGrid.plan(1024, 1024, 256, 32, reach=60)
    assert (reaching.context, reaching.blend) == (64, 8)  # the blend band follows the overlap
    assert TileGrid.plan(1024, 1024, 256, 32, reach=8).context == 32
    assert TileGrid.plan(100, 37, 0, 0, reach=16).input_shape == (104 + 32, 40 + 32)


def test_tile_read_reflects_at_the_image_border() -> None:
    plane = np.arange(6 * 10).reshape(6, 10)
    grid = TileGrid.plan(6, 10, 0, 8)
    (only,) = grid.tiles()
    read = grid.read(plane, only)
    assert read.shape == (8 + 16, 16 + 16)
    rows = np.pad(np.arange(6), (8, 8 + 2), mode="reflect")
    cols = np.pad(np.arange(10), (8, 8 + 6), mode="reflect")
    np.testing.assert_array_equal(read, plane[rows[:, None], cols[None, :]])


def test_core_of_crops_the_context() -> None:
    grid = TileGrid.plan(64, 64, 24, 16)
    assert (grid.context, grid.core_h, grid.core_w) == (16, 32, 32)
    output = np.arange(3 * 64 * 64).reshape(3, 64, 64)
    np.testing.assert_array_equal(grid.core_of(output), output[:, 16:48, 16:48])
    np.testing.assert_array_equal(grid.core_of(output[:, ::8, ::8], 8), output[:, 16:48:8, 16:48:8])
    trimmed = output[:, 10:-10, 10:-10]  # an output without some of the context
    np.testing.assert_array_equal(grid.core_of(trimmed), output[:, 16:48, 16:48])


def blend(
    forward, plane: np.ndarray, tile: int, overlap: int, channels=3, scale=1, reach=0
) -> np.ndarray:
    """Run `forward` over the tiles of a float32 plane with the real tile loop; return the
    blended (padded height, padded width, channels) output, checking each row comes once."""
    layout = PlaneLayout.of(plane.shape)
    grid = TileGrid.plan(*layout.plane_shape, tile, overlap, reach=reach)
    ph, pw = grid.padded
    result = np.zeros((ph // scale, pw // scale, channels), dtype=np.float32)
    count = np.zeros(ph // scale, dtype=int)

    def on_rows(rows) -> None:
        span = slice(rows.start, rows.start + len(rows.blended))
        result[span] = rows.blended
        count[span] += 1

    source = PlaneSource(layout, plane, Normalization(0.0, 1.0, np.dtype(np.float32)))
    job = run_tiles(
        lambda x, noise: forward(x),
        source,
        grid,
        batch_size=3,
        device=torch.device("cpu"),
        channels=channels,
        scale=scale,
        on_rows=on_rows,
    )
    progress = [(p.done, p.total) for p in job]
    assert progress[-1] == (len(grid.tiles()), len(grid.tiles()))
    np.testing.assert_array_equal(count, 1)
    return result


def box(radius: int):
    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)

    return forward


PLANE = np.random.default_rng(0).random((70, 93)).astype(np.float32)


@pytest.mark.parametrize(("tile", "overlap"), [(16, 8), (32, 0), (24, 16), (64, 32)])
def test_identity_tiles_blend_back_to_the_plane(tile: int, overlap: int) -> None:
    out = blend(lambda x: x, PLANE, tile, overlap)
    assert out.shape == (72, 96, 3)
    np.testing.assert_allclose(out[:70, :93], np.repeat(PLANE[:, :, None], 3, 2), rtol=1e-6)


@pytest.mark.parametrize(("tile", "overlap"), [(16, 8), (24, 16), (32, 2)])
def test_local_operator_tiled_equals_whole(tile: int, overlap: int) -> None:
    """Any operator whose reach fits in the context gives the whole-image result."""
    forward = box(2)
    whole = blend(forward, PLANE, 0, overlap)
    tiled = blend(forward, PLANE, tile, overlap)
    np.testing.assert_allclose(tiled[:70, :93], whole[:70, :93], rtol=1e-6, atol=1e-7)


def test_a_context_as_wide_as_the_reach_hides_the_seams() -> None:
    forward = box(10)
    whole = blend(forward, PLANE, 0, 0, reach=16)
    tiled = blend(forward, PLANE, 16, 0, reach=16)
    np.testing.assert_allclose(tiled, whole, rtol=1e-6, atol=1e-7)


def test_operator_reaching_past_the_context_shows_seams() -> None:
    """The previous test is sensitive: without enough context, tiles do differ."""
    forward = box(10)
    whole = blend(forward, PLANE, 0, 0)
    tiled = blend(forward, PLANE, 16, 0)
    assert np.abs(tiled - whole).max() > 1e-3


def test_downscaled_outputs_tile_like_whole() -> None:
    """The analysis path: outputs at 1/8 resolution land in the right cells."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 8)

    whole = blend(forward, PLANE, 0, 16, scale=8)
    tiled = blend(forward, PLANE, 16, 16, scale=8)
    assert whole.shape == tiled.shape == (9, 12, 3)
    np.testing.assert_allclose(tiled, whole, rtol=1e-6)


def structured_image(height: int, width: int, rgb: bool = False) -> np.ndarray:
    source = data.astronaut() if rgb else data.camera()
    reps = (-(-height // 512), -(-width // 512)) + ((1,) if rgb else ())
    return np.ascontiguousarray(np.tile(source, reps)[:height, :width])


@pytest.fixture(scope="module")
def restorers(tiny_restorer):
    torch.manual_seed(0)
    randomised = make_restorer(randomize_zero_init(build_network("tiny"), 0.1, seed=7))
    return {"tiny": tiny_restorer, "randomised": randomised}


def max_grey_level_difference(restorer, image: np.ndarray, tile: int, overlap: int) -> int:
    whole = restorer.restore(image, tile=0, overlap=overlap)
    tiled = restorer.restore(image, tile=tile, overlap=overlap)
    assert whole.dtype == tiled.dtype == np.uint8
    # the network does change the image, so the comparison means something
    assert np.abs(whole.astype(int) - image).mean() > 1
    return int(np.abs(whole.astype(int) - tiled.astype(int)).max())


@pytest.mark.slow
@pytest.mark.parametrize("model", ["tiny", "randomised"])
def test_acceptance_tiled_matches_whole_1024(restorers, model: str) -> None:
    image = structured_image(1024, 1024)
    assert max_grey_level_difference(restorers[model], image, tile=256, overlap=32) <= 1


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("model", ["tiny", "randomised"])
def test_tiled_matches_whole_at_an_odd_size(restorers, model: str, rgb: bool) -> None:
    image = structured_image(300, 517, rgb)
    assert image.shape[:2] == (300, 517)
    assert max_grey_level_difference(restorers[model], image, tile=128, overlap=32) <= 1
