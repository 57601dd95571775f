"""Property-based tests: any small image, dtype, axes and tiling gives a well-formed result."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from allinone.infer.axes import guess_axes
from allinone.infer.tiling import TileGrid, reflect_indices

DTYPES = [np.uint8, np.uint16, np.int16, np.int64, np.float16, np.float32, np.float64]


@st.composite
def images(draw) -> tuple[np.ndarray, str | None, str]:
    """A random array of 2 to 4 dimensions (1..40 px planes), with guessed or explicit axes."""
    height = draw(st.integers(1, 40))
    width = draw(st.integers(1, 40))
    layout = draw(st.sampled_from(["YX", "ZYX", "YXC", "TZYX", "ZYXC", "CYX", "XY", "YXZ"]))
    lead = {letter: draw(st.integers(1, 3)) for letter in "TZ"}
    lead["C"] = draw(st.sampled_from([3, 4])) if layout.endswith("C") else draw(st.integers(1, 3))
    sizes = {"Y": height, "X": width, **lead}
    shape = tuple(sizes[letter] for letter in layout)
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        image = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    else:
        magnitude = draw(st.sampled_from([1e-3, 1.0, 1e4]))
        image = (rng.normal(size=shape) * magnitude).astype(dtype)
    if draw(st.booleans()):
        image[...] = image.flat[0]  # constant images too
    explicit = draw(st.booleans()) or guess_axes(shape) != layout
    return image, layout if explicit else None, layout


@st.composite
def tilings(draw) -> tuple[int, int]:
    tile = draw(st.one_of(st.just(0), st.integers(16, 64)))
    return tile, draw(st.integers(0, 16))


@pytest.fixture(scope="module")
def restorer():
    from allinone.infer.restorer import Restorer

    return Restorer.from_pretrained("tiny", device="cpu")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=images(), tiling=tilings())
def test_restore_is_well_formed(restorer, case, tiling) -> None:
    image, axes, layout = case
    tile, overlap = tiling
    out = restorer.restore(image, axes=axes, tile=tile, overlap=overlap)
    assert out.shape == image.shape
    assert out.dtype == image.dtype
    if np.issubdtype(image.dtype, np.floating):
        assert np.isfinite(out).all()
        info = np.finfo(image.dtype)
        assert (np.abs(out) <= info.max).all()
    else:
        info = np.iinfo(image.dtype)
        assert out.min() >= info.min and out.max() <= info.max
    if layout.endswith("C") and image.shape[-1] == 4:
        np.testing.assert_array_equal(out[..., 3], image[..., 3])  # alpha


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(-300, 300),
    length=st.integers(0, 300),
    size=st.integers(1, 50),
)
def test_reflect_indices_stay_inside_and_mirror(start: int, length: int, size: int) -> None:
    index = reflect_indices(start, start + length, size)
    assert index.shape == (length,)
    if length:
        assert index.min() >= 0 and index.max() < size
    inside = np.arange(start, start + length)
    within = (inside >= 0) & (inside < size)
    np.testing.assert_array_equal(index[within], inside[within])
    if size > 1:
        mirrored = reflect_indices(-start - length + 1, -start + 1, size)[::-1]
        np.testing.assert_array_equal(index, mirrored)  # symmetric about 0


@settings(max_examples=200, deadline=None)
@given(
    height=st.integers(1, 700),
    width=st.integers(1, 700),
    tile=st.one_of(st.just(0), st.integers(1, 300)),
    overlap=st.integers(0, 64),
)
def test_tile_grids_cover_with_positive_weights(height, width, tile, overlap) -> None:
    grid = TileGrid.plan(height, width, tile, overlap)
    ph, pw = grid.padded
    weights = np.zeros((ph, pw), dtype=np.float64)
    for t in grid.tiles():
        assert t.y % 8 == 0 and t.x % 8 == 0
        assert t.y + grid.core_h <= ph and t.x + grid.core_w <= pw
        weights[t.y : t.y + grid.core_h, t.x : t.x + grid.core_w] += grid.weight(t)
    assert weights.min() > 0
