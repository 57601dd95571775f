"""Reading and writing images: round trips, metadata, atomic writes and clear errors."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st

from allinone import io
from allinone.errors import InputError, OutputExistsError
from allinone.io import ensure_writable, read_image, write_image

RNG = np.random.default_rng(0)


def _random(shape: tuple[int, ...], dtype: type) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        return RNG.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    return RNG.random(shape).astype(dtype)


def _round_trip(path: Path, array: np.ndarray, **kwargs) -> io.ImageData:
    write_image(path, array, **kwargs)
    return read_image(path)


# --- round trips -----------------------------------------------------------------------------


def test_png_rgb_uint8_round_trip(tmp_path: Path) -> None:
    array = _random((20, 30, 3), np.uint8)
    image = _round_trip(tmp_path / "rgb.png", array)
    np.testing.assert_array_equal(image.array, array)
    assert (image.axes, image.format) == ("YXC", "png")


def test_png_grey_uint16_round_trip(tmp_path: Path) -> None:
    array = _random((20, 30), np.uint16)
    image = _round_trip(tmp_path / "grey.png", array)
    assert image.array.dtype == np.uint16
    np.testing.assert_array_equal(image.array, array)
    assert image.axes == "YX"


def test_png_rgba_keeps_alpha(tmp_path: Path) -> None:
    array = _random((8, 9, 4), np.uint8)
    image = _round_trip(tmp_path / "rgba.png", array)
    np.testing.assert_array_equal(image.array, array)
    assert image.axes == "YXC"


@pytest.mark.parametrize("shape", [(32, 40, 3), (32, 40)])
def test_jpeg_round_trip_is_close(tmp_path: Path, shape: tuple[int, ...]) -> None:
    smooth = np.linspace(0, 255, 32 * 40).reshape(32, 40)
    array = np.stack([smooth] * 3, axis=-1) if len(shape) == 3 else smooth
    array = array.astype(np.uint8)
    image = _round_trip(tmp_path / "photo.jpeg", array)
    assert image.array.shape == shape and image.array.dtype == np.uint8
    assert image.format == "jpeg"
    assert np.abs(image.array.astype(int) - array).mean() < 3


def test_tiff_uint16_zyx_keeps_axes(tmp_path: Path) -> None:
    array = _random((5, 16, 24), np.uint16)
    image = _round_trip(tmp_path / "stack.tif", array, axes="ZYX")
    np.testing.assert_array_equal(image.array, array)
    assert (image.axes, image.format) == ("ZYX", "tiff")
    with tifffile.TiffFile(tmp_path / "stack.tif") as tif:
        assert tif.is_imagej


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16])
def test_tiff_keeps_dtype(tmp_path: Path, dtype: type) -> None:
    array = _random((3, 8, 8), dtype)
    image = _round_trip(tmp_path / "values.tiff", array, axes="ZYX")
    assert image.array.dtype == dtype
    np.testing.assert_array_equal(image.array, array)
    assert image.axes == "ZYX"


def test_tiff_rgb_round_trip(tmp_path: Path) -> None:
    array = _random((10, 12, 3), np.uint8)
    image = _round_trip(tmp_path / "rgb.tif", array, axes="YXC")
    np.testing.assert_array_equal(image.array, array)
    assert image.axes == "YXC"
    assert image.metadata["photometric"] == "rgb"


def test_imagej_hyperstack_round_trip(tmp_path: Path) -> None:
    source = tmp_path / "hyper.tif"
    array = _random((2, 3, 2, 8, 10), np.uint16)
    tifffile.imwrite(
        source,
        array,
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"axes": "TZCYX", "spacing": 0.75, "unit": "um", "finterval": 2.0},
    )
    image = read_image(source)
    assert image.axes == "TZCYX"
    assert image.metadata["imagej"] == {"spacing": 0.75, "unit": "um", "finterval": 2.0}

    again = _round_trip(
        tmp_path / "copy.tif", image.array, axes=image.axes, metadata=image.metadata
    )
    np.testing.assert_array_equal(again.array, array)
    assert again.axes == "TZCYX"
    assert again.metadata == image.metadata


def test_tczyx_order_outside_imagej_keeps_axes(tmp_path: Path) -> None:
    array = _random((2, 2, 3, 6, 7), np.uint16)
    image = _round_trip(tmp_path / "tczyx.tif", array, axes="TCZYX")
    np.testing.assert_array_equal(image.array, array)
    assert image.axes == "TCZYX"


def test_tiff_resolution_preserved(tmp_path: Path) -> None:
    meta = {"resolution": (2.5, 4.0), "resolutionunit": 3}
    for axes, dtype in (("ZYX", np.uint16), ("ZYX", np.float64)):
        image = _round_trip(
            tmp_path / f"res-{np.dtype(dtype).name}.tif",
            _random((2, 8, 8), dtype),
            axes=axes,
            metadata=meta,
        )
        assert image.metadata["resolution"] == (2.5, 4.0)
        assert image.metadata["resolutionunit"] == 3


def test_tiff_unknown_axes_are_none(tmp_path: Path) -> None:
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _random((4, 8, 8), np.uint8), photometric="minisblack", metadata=None)
    image = read_image(path)
    assert image.axes is None and image.array.shape == (4, 8, 8)


def test_a_tiff_with_an_unknown_photometric_code_is_read(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    data = _random((8, 8), np.uint16)
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["PhotometricInterpretation"].overwrite(99)
    image = read_image(path)
    np.testing.assert_array_equal(image.array, data)
    assert "photometric" not in image.metadata


@settings(max_examples=15, deadline=None)
@given(
    axes=st.sampled_from(["YX", "ZYX", "CYX", "TYX", "TZYX", "ZCYX", "TZCYX", "YXC", "ZYXC"]),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int32]),
    data=st.data(),
)
def test_tiff_round_trip_property(tmp_path_factory, axes: str, dtype: type, data) -> None:
    shape = tuple(data.draw(st.integers(1 if a not in "YX" else 2, 4)) for a in axes)
    array = _random(shape, dtype)
    path = tmp_path_factory.mktemp("prop") / "image.tif"
    image = _round_trip(path, array, axes=axes)
    np.testing.assert_array_equal(image.array.reshape(shape), array)
    if 1 not in shape:
        assert image.axes == axes


# --- refused writes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "array"),
    [
        ("deep.jpg", np.zeros((8, 8), np.uint16)),
        ("float.png", np.zeros((8, 8), np.float32)),
        ("colour16.png", np.zeros((8, 8, 3), np.uint16)),
        ("stack.png", np.zeros((3, 8, 8, 3), np.uint8)),
        ("image.bmp", np.zeros((8, 8), np.uint8)),
    ],
)
def test_unsupported_combinations_raise_before_writing(
    tmp_path: Path, name: str, array: np.ndarray
) -> None:
    with pytest.raises(InputError, match=name):
        write_image(tmp_path / name, array)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_refused_then_allowed(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_image(path, np.zeros((4, 4), np.uint8))
    before = path.read_bytes()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_image(path, np.full((4, 4), 9, np.uint8))
    assert path.read_bytes() == before
    write_image(path, np.full((4, 4), 9, np.uint8), overwrite=True)
    assert read_image(path).array.max() == 9


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    existing = tmp_path / "keep.tif"
    write_image(existing, np.ones((4, 4), np.uint16))
    before = existing.read_bytes()

    def broken(fh, *args, **kwargs) -> None:
        fh.write(b"II*\x00half an image")
        raise error

    monkeypatch.setattr(io.tifffile, "imwrite", broken)
    for target in (existing, tmp_path / "new.tif"):
        with pytest.raises(type(error)):
            write_image(target, np.zeros((4, 4), np.uint16), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]
    assert existing.read_bytes() == before


def test_ensure_writable(tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    source.write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="input"):
        ensure_writable(tmp_path / "sub" / ".." / "in.tif", inputs=[source], overwrite=True)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        ensure_writable(source)
    with pytest.raises(InputError, match="extension"):
        ensure_writable(tmp_path / "out.txt")
    with pytest.raises(InputError, match="does not exist"):
        ensure_writable(tmp_path / "missing" / "out.tif")
    assert ensure_writable(tmp_path / "out.tif", inputs=[source]) == tmp_path / "out.tif"
    assert ensure_writable(source, overwrite=True) == source


# --- unreadable inputs -------------------------------------------------------------------------


def _png_16bit_rgb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(4 * 3 * 2) for _ in range(3))
    header = struct.pack(">IIBBBBB", 4, 3, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))


def _file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _truncated(tmp_path: Path, name: str, array: np.ndarray) -> Path:
    whole = tmp_path / f"whole-{name}"
    write_image(whole, array)
    data = whole.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    return cut


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.tif", "no such file"),
        (lambda d: d, "folder"),
        (lambda d: _file(d, "empty.png", b""), "empty"),
        (lambda d: _file(d, "notes.tif", b"hello, not an image"), "not a TIFF"),
        (lambda d: _truncated(d, "cut.tif", _random((4, 32, 32), np.uint16)), "damaged"),
        (lambda d: _truncated(d, "cut.png", _random((32, 32, 3), np.uint8)), "damaged"),
        (lambda d: _truncated(d, "cut.jpg", _random((64, 64, 3), np.uint8)), "damaged"),
        (lambda d: _file(d, "c16.png", _png_16bit_rgb()), "16-bit"),
    ],
)
def test_unreadable_files_raise_input_error(tmp_path: Path, make, problem: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError, match=problem) as info:
        read_image(path)
    assert str(path) in str(info.value)
