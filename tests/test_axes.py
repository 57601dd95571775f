"""Axes strings: guessing, checking, and splitting N-D arrays into planes and back."""

from __future__ import annotations

import numpy as np
import pytest

from allinone.errors import InputError
from allinone.infer.axes import PlaneLayout, guess_axes, normalize_axes


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((5, 6), "YX"),
        ((3, 4), "YX"),  # 2-D is never colour
        ((2, 5, 6), "ZYX"),
        ((3, 5, 6), "ZYX"),  # a leading 3 is a stack, not colour
        ((5, 6, 3), "YXC"),
        ((5, 6, 4), "YXC"),
        ((5, 6, 5), "ZYX"),
        ((2, 3, 5, 6), "TZYX"),
        ((2, 5, 6, 3), "ZYXC"),
        ((2, 5, 6, 4), "ZYXC"),
        ((2, 2, 3, 5, 6), "TCZYX"),
        ((2, 2, 5, 6, 3), "TZYXC"),
    ],
)
def test_guess_axes(shape: tuple[int, ...], axes: str) -> None:
    assert guess_axes(shape) == axes


def test_guess_axes_with_explicit_rgb() -> None:
    assert guess_axes((5, 6, 3), rgb=False) == "ZYX"
    assert guess_axes((5, 6, 7), rgb=True) == "YXC"
    assert guess_axes((4, 5, 6, 2), rgb=True) == "ZYXC"
    with pytest.raises(InputError, match="too small for a colour image"):
        guess_axes((5, 6), rgb=True)


@pytest.mark.parametrize("shape", [(2, 2, 2, 2, 5, 6), (1, 1, 1, 1, 1, 5, 6), (2, 2, 2, 5, 6, 3)])
def test_guess_axes_refuses_more_than_five_axes(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match=rf"{len(shape)}-D arrays are not supported.*TCZYX"):
        guess_axes(shape)


@pytest.mark.parametrize("shape", [(), (7,)])
def test_guess_axes_refuses_fewer_than_two(shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match="at least 2 dimensions"):
        guess_axes(shape)


def test_normalize_axes_accepts_and_canonicalises() -> None:
    assert normalize_axes("zyx", (2, 3, 4)) == "ZYX"
    assert normalize_axes("YXS", (3, 4, 3)) == "YXC"  # ImageJ's samples axis
    assert normalize_axes("XY", (3, 4)) == "XY"
    assert normalize_axes("TCZYX", (1, 2, 3, 4, 5)) == "TCZYX"


@pytest.mark.parametrize(
    ("axes", "shape", "message"),
    [
        ("ZYX", (3, 4), "3 letters but the image has 2 dimensions"),
        ("YX", (2, 3, 4), "2 letters but the image has 3 dimensions"),
        ("QYX", (2, 3, 4), "unknown axis letter.*Q"),
        ("YXW", (2, 3, 4), "unknown axis letter.*W"),
        ("YYX", (2, 3, 4), "repeat a letter"),
        ("ZX", (3, 4), "must contain Y and X"),
        ("CY", (3, 4), "must contain Y and X"),
        ("", (3, 4), "non-empty string"),
    ],
)
def test_normalize_axes_errors(axes: str, shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(InputError, match=message):
        normalize_axes(axes, shape)


def test_normalize_axes_refuses_non_strings() -> None:
    with pytest.raises(InputError, match="non-empty string"):
        normalize_axes(None, (3, 4))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="non-empty string"):
        normalize_axes(["Y", "X"], (3, 4))  # type: ignore[arg-type]


CASES = [
    # shape, axes, colour planes, lead shape
    ((5, 7), "YX", False, ()),
    ((3, 5, 7), "ZYX", False, (3,)),
    ((3, 5, 7), "CYX", False, (3,)),
    ((5, 7, 3), "YXC", True, ()),
    ((5, 7, 4), "YXC", True, ()),
    ((5, 7, 2), "YXC", False, (2,)),  # two channels are two grey planes
    ((2, 3, 4, 5, 7), "TZCYX", False, (2, 3, 4)),
    ((7, 5), "XY", False, ()),
    ((4, 5, 7, 3), "ZYXC", True, (4,)),
    ((5, 3, 7), "YCX", False, (3,)),
    ((7, 2, 5), "XZY", False, (2,)),
]


@pytest.mark.parametrize(("shape", "axes", "rgb", "lead"), CASES)
def test_plane_layout_round_trip(shape, axes, rgb, lead) -> None:
    array = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    layout = PlaneLayout.of(shape, axes)
    assert layout.rgb is rgb
    assert layout.lead_shape == lead
    assert layout.num_planes == int(np.prod(lead))
    height, width = shape[axes.index("Y")], shape[axes.index("X")]
    assert layout.plane_shape == (height, width)
    out = np.full_like(array, -1)
    indices = list(layout.indices())
    assert len(indices) == layout.num_planes
    for index in indices:
        plane = layout.get(array, index)
        assert plane.shape == ((height, width, shape[-1]) if rgb else (height, width))
        layout.put(out, index, plane)
    np.testing.assert_array_equal(out, array)


def test_plane_layout_reads_the_right_pixels() -> None:
    array = np.arange(2 * 3 * 5 * 7).reshape(2, 3, 5, 7)  # TZYX
    layout = PlaneLayout.of(array.shape, "TZYX")
    np.testing.assert_array_equal(layout.get(array, (1, 2)), array[1, 2])
    transposed = PlaneLayout.of((7, 5), "XY")
    image = np.arange(35).reshape(7, 5)
    np.testing.assert_array_equal(transposed.get(image, ()), image.T)
    channels_first = PlaneLayout.of((5, 3, 7), "YCX")
    image = np.arange(105).reshape(5, 3, 7)
    np.testing.assert_array_equal(channels_first.get(image, (1,)), image[:, 1, :])
    rgb_stack = PlaneLayout.of((4, 5, 7, 3), "ZYXC")
    image = np.arange(4 * 5 * 7 * 3).reshape(4, 5, 7, 3)
    np.testing.assert_array_equal(rgb_stack.get(image, (2,)), image[2])


def test_plane_layout_guesses_axes() -> None:
    assert PlaneLayout.of((4, 5, 7, 3)).axes == "ZYXC"
    assert PlaneLayout.of((4, 5, 7)).axes == "ZYX"


def test_plane_layout_reads_dask_and_memmap(tmp_path) -> None:
    da = pytest.importorskip("dask.array")
    array = np.arange(3 * 5 * 7, dtype=np.uint16).reshape(3, 5, 7)
    layout = PlaneLayout.of(array.shape, "ZYX")
    lazy = da.from_array(array, chunks=(1, 5, 7))
    memmap = np.lib.format.open_memmap(
        tmp_path / "a.npy", mode="w+", dtype=np.uint16, shape=(3, 5, 7)
    )
    memmap[:] = array
    for source in (lazy, memmap):
        plane = layout.get(source, (1,))
        assert isinstance(plane, np.ndarray)
        np.testing.assert_array_equal(plane, array[1])


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (2, 0, 5)])
def test_plane_layout_refuses_empty_planes(shape) -> None:
    with pytest.raises(InputError, match="empty"):
        PlaneLayout.of(shape)
