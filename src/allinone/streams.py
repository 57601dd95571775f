"""TIFF images larger than memory: read in place, written as they are produced.

`open_tiff` leaves the pixels on disk: mapped on demand when the file stores them uncompressed
and contiguous (what ImageJ, Fiji and tifffile write by default), otherwise read page by page
through tifffile's zarr interface. `tiff_output` lays out the result's TIFF as a hidden temporary
file beside the target, preallocates it (a full disk fails there, with a message, not later as a
crash inside a memory map), hands it out as a writable `FileArray`, and renames it over the
target only once it is complete and flushed; on any failure or interrupt the temporary file is
removed. Memory therefore follows the tile and plane size, not the file size
(`benchmarks/STREAMING.md`: 32 MB and 1 GB stacks peak alike).

A `FileArray` maps its file only for the one read or write in progress: the pages of a mapping
that stays open count towards the process's resident memory until the kernel needs them back,
so a stack read or written through one long-lived `numpy.memmap` looks (and, on a machine short
of memory, competes) as large as the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import tifffile

from allinone.errors import InputError

MAPPED_BYTES = 64 * 2**20
"""A read spanning more of the file than this (a strided sample of a whole stack) maps it in
pieces of about this size, one after the other."""


class FileArray:
    """A C-ordered array stored at `offset` in the file `path`, read and written by NumPy
    indexing (`array[key]`, `array[key] = value`) through a memory map that lives for that one
    operation."""

    def __init__(
        self, path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int, writable: bool
    ) -> None:
        self.path, self.offset, self.writable = path, offset, writable
        self.dtype, self.shape = np.dtype(dtype), tuple(int(n) for n in shape)
        self.ndim, self.size = len(self.shape), int(np.prod(self.shape))
        self.nbytes = self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def _mapped(self) -> np.memmap:
        mode: Literal["r+", "r"] = "r+" if self.writable else "r"
        return np.memmap(self.path, self.dtype, mode, offset=self.offset, shape=self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if key == (Ellipsis,):
            key = (slice(None),)
        if self.ndim < 2 or not isinstance(key[0], slice) or Ellipsis in key:
            return np.array(self._mapped()[key])
        start, stop, stride = key[0].indices(self.shape[0])
        if stride < 0:
            return np.array(self._mapped()[key])
        span = max(1, MAPPED_BYTES // max(1, self.nbytes // self.shape[0]))
        span = -(-span // stride) * stride
        parts = [
            np.array(self._mapped()[(slice(first, min(first + span, stop), stride), *key[1:])])
            for first in range(start, stop, span)
        ]
        return np.concatenate(parts) if parts else np.array(self._mapped()[key])

    def __setitem__(self, key, value) -> None:
        if not self.writable:
            raise ValueError(f"{self.path} is open read-only")
        self._mapped()[key] = value

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        values = self[...]
        return values if dtype is None else values.astype(dtype)


def open_tiff(path: Path) -> Any:
    """The first series of the TIFF at `path` as an array-like that reads on demand: a read-only
    `FileArray` when the series is stored contiguously and uncompressed, else a read-only zarr
    array over tifffile's page store. Big-endian data is read whole, in native byte order."""
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"Cannot read {path}: the TIFF file contains no image.")
        series = tif.series[0]
        if not series.dtype.isnative:
            return series.asarray().astype(series.dtype.newbyteorder("="))
        offset, shape, dtype = series.dataoffset, series.shape, series.dtype
    if 0 in shape:
        raise InputError(f"Cannot read {path}: the image contains no pixels.")
    if offset is not None:
        needed = offset + int(np.prod(shape)) * dtype.itemsize
        if needed > path.stat().st_size:
            raise InputError(
                f"Cannot read {path}: the TIFF file is truncated ({path.stat().st_size} bytes, "
                f"its image needs {needed})."
            )
        return FileArray(path, dtype, shape, offset, writable=False)
    import zarr

    store = tifffile.imread(path, aszarr=True, series=0)
    return zarr.open_array(store, mode="r")


@contextlib.contextmanager
def tiff_output(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, options: dict[str, Any]
) -> Iterator[FileArray]:
    """A writable `FileArray` of a new TIFF that becomes `path` when the block ends cleanly.

    `options` are `tifffile.imwrite`'s (imagej, metadata, photometric, resolution, ...)."""
    temp = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}{path.suffix or '.tif'}")
    try:
        written = tifffile.imwrite(temp, shape=shape, dtype=dtype, returnoffset=True, **options)
        assert written is not None  # an uncompressed, contiguous image has an offset
        offset, size = written
        _preallocate(temp, path)
        yield FileArray(temp, dtype, shape, offset, writable=True)
        with temp.open("rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise InputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
        raise


def _preallocate(temp: Path, path: Path) -> None:
    """Reserve the file's blocks now, so that a full disk is an error here, not a SIGBUS later."""
    size = temp.stat().st_size
    fd = os.open(temp, os.O_RDWR)
    try:
        if hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                    return  # the file system cannot reserve blocks: write as it comes
                raise InputError(
                    f"Cannot write {path}: {exc.strerror or exc} ({size / 2**20:.0f} MiB needed)."
                ) from exc
    finally:
        os.close(fd)
