"""File-to-file restores that never hold the image in memory: lazy TIFF reads, memory-mapped TIFF
outputs, OME-Zarr in and out, and the guarantees around them (no partial output, clear errors)."""

from __future__ import annotations

import errno
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from allinone import streams
from allinone.cli import main
from allinone.errors import InputError
from allinone.io import image_output, read_image, write_image

TINY = ["--model", "tiny", "--device", "cpu"]
RNG = np.random.default_rng(7)


def _stack(shape=(3, 40, 48)) -> np.ndarray:
    return RNG.poisson(40.0, shape).astype(np.uint16)


def _restore(*argv) -> int:
    return main(["restore", *map(str, argv), *TINY])


def test_an_uncompressed_tiff_is_mapped_on_demand_and_a_compressed_one_read_by_page(
    tmp_path: Path,
) -> None:
    stack = _stack()
    plain, packed = tmp_path / "plain.tif", tmp_path / "packed.tif"
    tifffile.imwrite(plain, stack, imagej=True, metadata={"axes": "ZYX"})
    tifffile.imwrite(packed, stack, compression="zlib", metadata={"axes": "ZYX"})
    mapped, paged = read_image(plain, lazy=True), read_image(packed, lazy=True)
    assert isinstance(mapped.array, streams.FileArray) and isinstance(paged.array, zarr.Array)
    np.testing.assert_array_equal(mapped.array[1], stack[1])
    np.testing.assert_array_equal(paged.array[2, 5:9], stack[2, 5:9])
    assert mapped.axes == paged.axes == "ZYX"


def test_a_truncated_tiff_is_refused_before_any_work(tmp_path: Path, capsys) -> None:
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, _stack(), imagej=True, metadata={"axes": "ZYX"})
    source.write_bytes(source.read_bytes()[:-500])
    assert _restore(source, "-o", tmp_path / "out.tif") == 2
    assert "truncated" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.tif"]


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_a_streamed_tiff_restore_equals_the_in_memory_one_and_keeps_its_metadata(
    tmp_path: Path, compression: str | None
) -> None:
    from allinone import Restorer

    stack = _stack()
    source, output = tmp_path / "stack.tif", tmp_path / "restored.tif"
    imagej = compression is None
    tifffile.imwrite(
        source,
        stack,
        imagej=imagej,
        compression=compression,
        resolution=(2.0, 2.0),
        metadata={"axes": "ZYX", **({"spacing": 3.0, "unit": "um"} if imagej else {})},
    )
    assert _restore(source, "-o", output) == 0
    result = read_image(output)
    expected = Restorer.from_pretrained("tiny", device="cpu").restore(stack, axes="ZYX")
    np.testing.assert_array_equal(result.array, expected)
    assert result.axes == "ZYX" and result.metadata["resolution"] == (2.0, 2.0)
    if imagej:
        assert result.metadata["imagej"]["spacing"] == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["restored.tif", "stack.tif"]


def test_a_full_disk_gives_a_message_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(streams.os, "posix_fallocate", no_space, raising=False)
    output = image_output(tmp_path / "out.tif", _stack(), axes="ZYX")
    with pytest.raises(InputError, match="No space left"), output as out:
        out[...] = 1
    assert not list(tmp_path.iterdir())


def test_an_interrupted_output_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = tmp_path / "out.tif"
    write_image(target, np.zeros((4, 4), np.uint8))
    output = image_output(target, _stack(), axes="ZYX", overwrite=True)
    with pytest.raises(KeyboardInterrupt), output as out:
        out[0] = 5
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    assert read_image(target).array.shape == (4, 4)


def _ome_zarr(path: Path, data: np.ndarray, version: str = "0.4") -> None:
    """An OME-Zarr image (NGFF `version` 0.4 or 0.5) written by plain zarr, as another tool
    would write it."""
    group = zarr.open_group(path, mode="w", zarr_format=2 if version == "0.4" else 3)
    names = None if version == "0.4" else ("c", "z", "y", "x")
    group.create_array("0", data=data, chunks=(1, 1, 32, 32), dimension_names=names)
    multiscale = {
        "name": "cells",
        "axes": [
            {"name": "c", "type": "channel"},
            {"name": "z", "type": "space", "unit": "micrometer"},
            {"name": "y", "type": "space", "unit": "micrometer"},
            {"name": "x", "type": "space", "unit": "micrometer"},
        ],
        "datasets": [
            {
                "path": "0",
                "coordinateTransformations": [{"type": "scale", "scale": [1.0, 2.5, 0.325, 0.325]}],
            }
        ],
    }
    window = {"start": 0, "end": 200, "min": 0, "max": 65535}
    omero = {
        "channels": [
            {"label": "DAPI", "color": "0000FF", "window": window},
            {"label": "GFP", "color": "00FF00", "window": window},
        ]
    }
    if version == "0.4":
        group.attrs["multiscales"] = [{"version": "0.4", **multiscale}]
        group.attrs["omero"] = omero
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": [multiscale], "omero": omero}


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip_keeps_shape_dtype_axes_scale_and_channels(
    tmp_path: Path, version: str
) -> None:
    data = RNG.poisson(30.0, (2, 3, 300, 280)).astype(np.uint16)
    source, output = tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr"
    _ome_zarr(source, data, version)
    assert _restore(source, "-o", output) == 0
    before, after = read_image(source), read_image(output)
    assert after.array.shape == data.shape and after.array.dtype == data.dtype
    assert after.axes == before.axes == "CZYX"
    for key in ("axes", "scale", "name", "omero"):
        assert after.metadata["ngff"][key] == before.metadata["ngff"][key], key
    levels = zarr.open_group(output, mode="r")
    assert levels["1"].shape == (2, 3, 150, 140) and "2" not in levels  # 150 <= PYRAMID_MIN
    corner = np.asarray(after.array[..., :2, :2], np.float64).mean(axis=(-1, -2))
    np.testing.assert_array_equal(levels["1"][..., 0, 0], np.round(corner))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_tiff_converted_to_ome_zarr_keeps_its_pixel_sizes(tmp_path: Path) -> None:
    source, output = tmp_path / "stack.tif", tmp_path / "stack.ome.zarr"
    tifffile.imwrite(
        source,
        _stack(),
        imagej=True,
        resolution=(4.0, 4.0),
        metadata={"axes": "ZYX", "spacing": 2.0, "unit": "um"},
    )
    assert _restore(source, "-o", output) == 0
    ngff = read_image(output).metadata["ngff"]
    assert ngff["scale"] == [2.0, 0.25, 0.25]
    assert [axis["unit"] for axis in ngff["axes"]] == ["micrometer"] * 3


def test_a_zarr_store_without_ngff_metadata_is_refused(tmp_path: Path, capsys) -> None:
    source = tmp_path / "plain.zarr"
    zarr.open_group(source, mode="w").create_array("0", data=_stack())
    assert _restore(source, "-o", tmp_path / "out.tif") == 2
    assert "no OME-NGFF image metadata" in capsys.readouterr().err
    assert not (tmp_path / "out.tif").exists()


def test_invalid_ngff_metadata_is_refused_with_the_reason(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.ome.zarr"
    _ome_zarr(source, _stack((1, 2, 32, 32)))
    group = zarr.open_group(source, mode="r+")
    group.attrs["omero"] = {"channels": [{"label": "DAPI"}]}
    assert _restore(source, "-o", tmp_path / "out.tif") == 2
    assert "OME-NGFF metadata is not valid (omero.channels.0" in capsys.readouterr().err
    assert not (tmp_path / "out.tif").exists()


def test_axis_names_that_are_not_letters_are_refused(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.ome.zarr"
    _ome_zarr(source, _stack((1, 2, 32, 32)))
    group = zarr.open_group(source, mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"][0]["name"] = 1
    group.attrs["multiscales"] = multiscales
    assert _restore(source, "-o", tmp_path / "out.tif") == 2
    assert "unsupported OME-Zarr axes [1, 'z', 'y', 'x']" in capsys.readouterr().err
    assert not (tmp_path / "out.tif").exists()


def test_an_output_inside_the_input_store_is_refused(tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.ome.zarr"
    _ome_zarr(source, _stack((1, 2, 32, 32)))
    assert _restore(source, "-o", source / "restored.ome.zarr") == 2
    assert "inside the input store" in capsys.readouterr().err
    assert sorted(p.name for p in source.iterdir() if not p.name.startswith(".")) == ["0"]


def test_an_existing_store_is_replaced_only_with_overwrite(tmp_path: Path, capsys) -> None:
    source, output = tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr"
    _ome_zarr(source, _stack((1, 2, 32, 32)))
    assert _restore(source, "-o", output) == 0
    assert _restore(source, "-o", output) == 2
    assert "already exists" in capsys.readouterr().err
    assert _restore(source, "-o", output, "--overwrite") == 0
    assert read_image(output).array.shape == (1, 2, 32, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.ome.zarr", "out.ome.zarr"]


def test_a_file_array_reads_a_strided_sample_of_a_stack_in_pieces(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(streams, "MAPPED_BYTES", 1000)  # a few planes a mapping
    data = RNG.integers(0, 1000, (37, 20, 30)).astype(np.uint16)
    data.tofile(tmp_path / "raw")
    array = streams.FileArray(tmp_path / "raw", data.dtype, data.shape, 0, writable=False)
    keys = [
        (slice(None, None, 3), slice(None, None, 2), slice(1, None, 5)),
        (slice(2, 30, 7),),
        (5, slice(3, 9)),
        Ellipsis,
        (slice(36, None),),
    ]
    for key in keys:
        np.testing.assert_array_equal(array[key], data[key])
    np.testing.assert_array_equal(np.asarray(array), data)
    with pytest.raises(ValueError, match="read-only"):
        array[0] = 1


MAPPED_BUFFERS = """
import ctypes, sys
import numpy as np
from allinone.heap import return_large_buffers

class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
if sys.argv[1] == "fixed":
    assert return_large_buffers()
first = np.ones(2**18)
del first
second = np.ones(2**18)
print(mallinfo2().hblks)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_a_buffer_of_megabytes_keeps_a_map_of_its_own_after_one_was_freed() -> None:
    """glibc alone serves the second 2 MiB buffer from its heap, where freed space fragments."""

    def mapped_chunks(mode: str) -> int:
        command = [sys.executable, "-c", MAPPED_BUFFERS, mode]
        return int(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    assert mapped_chunks("fixed") == mapped_chunks("default") + 1
