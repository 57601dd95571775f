"""TIFF images larger than memory: read in place, written as they are produced.

`open_tiff` leaves the pixels on disk: memory-mapped when the file stores them uncompressed and
contiguous (what ImageJ, Fiji and tifffile write by default), otherwise read page by page through
tifffile's zarr interface. `tiff_output` lays out the result's TIFF as a hidden temporary file
beside the target, preallocates it (a full disk fails there, with a message, not later as a
crash inside the memory map), hands it out as a writable memory map, and renames it over the
target only once it is complete and flushed; on any failure or interrupt the temporary file is
removed. Peak memory therefore follows the tile and plane size, not the file size.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from allinone.errors import InputError


def open_tiff(path: Path) -> Any:
    """The first series of the TIFF at `path` as an array-like that reads on demand: a read-only
    `numpy.memmap` when the series is memory-mappable, else a read-only zarr array over
    tifffile's page store. Big-endian data is read whole, in native byte order."""
    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"Cannot read {path}: the TIFF file contains no image.")
        series = tif.series[0]
        if not series.dtype.isnative:
            return series.asarray().astype(series.dtype.newbyteorder("="))
        offset, shape, dtype = series.dataoffset, series.shape, series.dtype
    if offset is not None:
        needed = offset + int(np.prod(shape)) * dtype.itemsize
        if needed > path.stat().st_size:
            raise InputError(
                f"Cannot read {path}: the TIFF file is truncated ({path.stat().st_size} bytes, "
                f"its image needs {needed})."
            )
        return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    import zarr

    store = tifffile.imread(path, aszarr=True, series=0)
    return zarr.open_array(store, mode="r")


@contextlib.contextmanager
def tiff_output(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, options: dict[str, Any]
) -> Iterator[np.memmap]:
    """A writable memory map of a new TIFF that becomes `path` when the block ends cleanly.

    `options` are `tifffile.imwrite`'s (imagej, metadata, photometric, resolution, ...)."""
    temp = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}{path.suffix or '.tif'}")
    try:
        offset, size = tifffile.imwrite(
            temp, shape=shape, dtype=dtype, returnoffset=True, **options
        )
        _preallocate(temp, path)
        out = np.memmap(temp, dtype=dtype, mode="r+", offset=offset, shape=shape)
        yield out
        out.flush()
        del out
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
