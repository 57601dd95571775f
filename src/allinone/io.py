"""Read and write TIFF, PNG, JPEG and OME-Zarr images with the metadata needed to write them back.

`read_image(path, lazy=True)` leaves a TIFF's or OME-Zarr's pixels on disk, and `image_output`
gives an array to restore into that is written to disk as it fills (`allinone.streams`,
`allinone.ome_zarr`), so that images larger than memory go from file to file. Every write is
atomic: the image goes to a hidden temporary file beside the target, is flushed to
disk, then renamed over the target, so a failure or an interrupt never leaves a partial file and
never damages an existing one. Problems the user can fix raise `InputError` or
`OutputExistsError` with a message naming the file, never a raw traceback from a codec.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import imageio.v3 as iio
import numpy as np
import tifffile

from allinone.errors import InputError, OutputExistsError
from allinone.ome_zarr import is_ome_zarr, ngff_from_tiff, ome_zarr_output, read_ome_zarr
from allinone.streams import open_tiff, tiff_output

PathLike = str | os.PathLike[str]

_FORMAT_NAMES = {
    "tif": "tiff",
    "tiff": "tiff",
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "zarr": "ome-zarr",
}
_SIGNATURES = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
)
_AXES = "TZCYX"
"""The axis letters the engine knows, in ImageJ's hyperstack order."""
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_IMAGEJ_KEYS = ("spacing", "unit", "finterval", "tunit", "fps", "xorigin", "yorigin", "zorigin")
_PNG_COLOUR_TYPES_16BIT_OK = (0,)
"""PNG colour types Pillow reads at 16 bits without reducing them to 8 (grey only)."""


@dataclass
class ImageData:
    """An image read from disk, with what is needed to write a result the same way."""

    array: np.ndarray
    axes: str | None
    """Axis letters from "TZCYX" (colour samples are "C"), or None when the file does not say."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """TIFF: "photometric", "resolution" (x, y), "resolutionunit" (int), "imagej" (spacing...)."""
    format: str = "tiff"
    """One of "tiff", "png", "jpeg", "ome-zarr"."""


def format_from_path(path: PathLike) -> str:
    """Return "tiff", "png", "jpeg" or "ome-zarr" from the file name's extension."""
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix not in _FORMAT_NAMES:
        raise InputError(
            f"Cannot write {path}: unsupported extension {Path(path).suffix or '(none)'!r}; "
            "use .tif, .tiff, .png, .jpg, .jpeg or .ome.zarr."
        )
    return _FORMAT_NAMES[suffix]


def read_image(path: PathLike, *, lazy: bool = False) -> ImageData:
    """Read a TIFF, PNG or JPEG file (the format is recognised from its content) or an OME-Zarr
    store (a folder named *.zarr; its highest resolution, always lazily).

    With `lazy`, a TIFF's pixels stay on disk (`allinone.streams.open_tiff`): the array reads
    what is indexed."""
    path = Path(path)
    fmt = "ome-zarr" if is_ome_zarr(path) and path.is_dir() else _sniff_format(path)
    try:
        image = _read_lazy(path, fmt) if lazy or fmt == "ome-zarr" else _READERS[fmt](path)
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(f"Cannot read {path}: the image is too large for memory.") from exc
    except Exception as exc:
        raise InputError(
            f"Cannot read {path}: the {fmt.upper()} file is damaged or truncated ({_reason(exc)})."
        ) from exc
    if image.array.size == 0:
        raise InputError(f"Cannot read {path}: the image contains no pixels.")
    return image


def _read_lazy(path: Path, fmt: str) -> ImageData:
    axes: str | None
    if fmt == "ome-zarr":
        array, axes, metadata = read_ome_zarr(path)
        return ImageData(array=array, axes=axes, metadata=metadata, format=fmt)
    if fmt != "tiff":
        return _READERS[fmt](path)
    with _tifffile_errors() as errors, tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"Cannot read {path}: the TIFF file contains no image.")
        axes = _engine_axes(tif.series[0].axes)
        metadata = _tiff_metadata(tif, tif.series[0].keyframe)
    if errors:
        raise InputError(
            f"Cannot read {path}: the TIFF file is damaged or truncated ({errors[0]})."
        )
    return ImageData(array=open_tiff(path), axes=axes, metadata=metadata, format="tiff")


def check_format(
    path: PathLike, array: np.ndarray, axes: str | None = None, format: str | None = None
) -> str:
    """Check that `array` (with `axes`) can be written to `path`; return the format's name.

    Called by `write_image`, and by the CLI before any computation so the user learns early.
    """
    fmt = _normalise_format(format) if format else format_from_path(path)
    if axes is not None and len(axes) != array.ndim:
        raise InputError(f"Cannot write {path}: axes {axes!r} do not match shape {array.shape}.")
    if fmt == "tiff":
        if array.dtype.kind not in "biufc":
            raise InputError(f"Cannot write {path}: TIFF cannot hold {array.dtype} data.")
        return fmt
    if fmt == "ome-zarr":
        if array.dtype.kind not in "biuf":
            raise InputError(f"Cannot write {path}: OME-Zarr output holds no {array.dtype} data.")
        if axes is None or not {"Y", "X"} <= set(axes):
            raise InputError(
                f"Cannot write {path}: OME-Zarr needs the image's axes (with Y and X); "
                "give them with --axes."
            )
        return fmt
    channels = array.shape[2] if array.ndim == 3 else 1
    layout_ok = array.ndim == 2 or (array.ndim == 3 and (axes in (None, "YXC")))
    if fmt == "png":
        ok = layout_ok and (
            (array.dtype == np.uint8 and channels <= 4)
            or (array.dtype == np.uint16 and array.ndim == 2)
        )
        need = "8-bit grey, grey+alpha, RGB or RGBA, or 16-bit grey"
    else:
        ok = layout_ok and array.dtype == np.uint8 and channels in (1, 3) and array.ndim in (2, 3)
        need = "8-bit grey or RGB"
    if not ok:
        shape = "x".join(map(str, array.shape))
        raise InputError(
            f"Cannot write {path}: {fmt.upper()} holds {need} 2-D images, not {array.dtype} "
            f"{shape}{f' ({axes})' if axes else ''}; use a .tif output instead."
        )
    return fmt


def result_like(array, dtype: np.dtype) -> np.ndarray:
    """A stand-in with `array`'s shape and `dtype` (no memory: one zero, broadcast), for
    `check_format` and `image_output` when a result's dtype differs from its input's."""
    return np.broadcast_to(np.zeros((), dtype), tuple(array.shape))


def ensure_writable(
    output: PathLike, inputs: Iterable[PathLike] = (), overwrite: bool = False
) -> Path:
    """Check, before any work starts, that `output` can be written; return it as a Path.

    Raises `InputError` when `output` is one of `inputs`, has an unknown extension or its folder
    is missing or read-only, and `OutputExistsError` when it exists and `overwrite` is False.
    """
    path = Path(output)
    format_from_path(path)
    for item in inputs:
        if _same_file(path, Path(item)):
            raise InputError(
                f"The output {path} is the input file; choose a different output path."
            )
    for item in inputs:
        if Path(item).is_dir() and path.resolve().is_relative_to(Path(item).resolve()):
            raise InputError(
                f"The output {path} is inside the input store {item}; choose a path outside it."
            )
    if path.is_dir() and not is_ome_zarr(path):
        raise InputError(f"Cannot write {path}: it is a folder; give a file name.")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it.")
    folder = path.parent
    if not folder.is_dir():
        raise InputError(f"Cannot write {path}: the folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise InputError(f"Cannot write {path}: no permission to write in {folder}.")
    return path


def write_image(
    path: PathLike,
    array: np.ndarray,
    *,
    axes: str | None = None,
    metadata: dict[str, Any] | None = None,
    format: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `array` atomically, keeping its dtype, axes and (TIFF) resolution metadata.

    The format comes from `format` or the extension. TIFF is written as an ImageJ hyperstack when
    the axes and dtype allow it, otherwise with the axes in tifffile's shaped metadata.
    """
    path = Path(path)
    array = np.asarray(array)
    fmt = check_format(path, array, axes, format)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it.")
    meta = metadata or {}
    if fmt == "ome-zarr":
        with image_output(path, array, axes=axes, metadata=meta, overwrite=overwrite) as out:
            out[...] = array
        return path
    writer = _WRITERS[fmt]
    _atomic_write(path, fmt, lambda fh: writer(fh, array, axes, meta))
    return path


@contextlib.contextmanager
def image_output(
    path: PathLike,
    like,
    *,
    axes: str | None = None,
    metadata: dict[str, Any] | None = None,
    format: str | None = None,
    overwrite: bool = False,
) -> Iterator[Any]:
    """An array of `like`'s shape and dtype that becomes the image `path` when the block ends
    cleanly; nothing is written when it raises.

    TIFF and OME-Zarr outputs live on disk while they fill (a memory map, a zarr array), so
    their size is not bounded by memory; PNG and JPEG are held in memory and written at the
    end. `metadata` as `read_image` gives it: a TIFF's keeps its resolution and ImageJ
    metadata, an OME-Zarr's its axes, scale and channels (a TIFF's pixel sizes become the
    scale)."""
    path = Path(path)
    fmt = check_format(path, like, axes, format)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; pass --overwrite to replace it.")
    meta = metadata or {}
    shape, dtype = tuple(like.shape), np.dtype(like.dtype)
    if fmt == "tiff":
        with tiff_output(path, shape, dtype, tiff_options(shape, dtype, axes, meta)) as out:
            yield out
    elif fmt == "ome-zarr":
        assert axes is not None  # check_format requires them for OME-Zarr
        ngff = meta.get("ngff") or ngff_from_tiff(axes, meta)
        with ome_zarr_output(path, shape, dtype, axes, ngff) as out:
            yield out
    else:
        held = np.empty(shape, dtype)
        yield held
        write_image(path, held, axes=axes, metadata=meta, format=fmt, overwrite=overwrite)


# --- reading -------------------------------------------------------------------------------------


def _sniff_format(path: Path) -> str:
    if path.is_dir():
        raise InputError(f"Cannot read {path}: it is a folder, not an image file.")
    try:
        with path.open("rb") as fh:
            head = fh.read(8)
    except FileNotFoundError:
        raise InputError(f"Cannot read {path}: no such file.") from None
    except OSError as exc:
        raise InputError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if not head:
        raise InputError(f"Cannot read {path}: the file is empty.")
    for signature, fmt in _SIGNATURES:
        if head.startswith(signature):
            return fmt
    raise InputError(f"Cannot read {path}: it is not a TIFF, PNG or JPEG image.")


def _read_tiff(path: Path) -> ImageData:
    with _tifffile_errors() as errors, tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"Cannot read {path}: the TIFF file contains no image.")
        series = tif.series[0]
        array = series.asarray()
        axes = _engine_axes(series.axes)
        metadata = _tiff_metadata(tif, series.keyframe)
    if errors:
        raise InputError(
            f"Cannot read {path}: the TIFF file is damaged or truncated ({errors[0]})."
        )
    return ImageData(array=array, axes=axes, metadata=metadata, format="tiff")


@contextlib.contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    """Collect (and silence) the errors tifffile logs instead of raising, e.g. broken IFDs."""
    errors: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            errors.append(record.getMessage())
            return False
        return True

    logger = logging.getLogger("tifffile")
    logger.addFilter(keep)
    try:
        yield errors
    finally:
        logger.removeFilter(keep)


def _engine_axes(axes: str) -> str | None:
    """Map tifffile's axes to the engine's letters ("S" samples become "C"); None if unknown."""
    if "S" in axes and "C" not in axes:
        axes = axes.replace("S", "C")
    if set(axes) <= set(_AXES) and len(set(axes)) == len(axes):
        return axes
    return None


def _tiff_metadata(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    photometric = page.photometric  # the enum for known codes, a plain int for others or none
    if isinstance(photometric, tifffile.PHOTOMETRIC):
        metadata["photometric"] = photometric.name.lower()
    if "XResolution" in page.tags and "YResolution" in page.tags:
        metadata["resolution"] = tuple(float(v) for v in page.resolution)
        metadata["resolutionunit"] = int(page.resolutionunit)
    imagej = {k: v for k, v in (tif.imagej_metadata or {}).items() if k in _IMAGEJ_KEYS}
    if imagej:
        metadata["imagej"] = imagej
    return metadata


def _read_png(path: Path) -> ImageData:
    with path.open("rb") as fh:
        header = fh.read(26)
    bit_depth, colour_type = header[24:26] if len(header) == 26 else (0, 0)
    if bit_depth == 16 and colour_type not in _PNG_COLOUR_TYPES_16BIT_OK:
        raise InputError(
            f"Cannot read {path}: 16-bit colour PNG would be reduced to 8 bits; "
            "convert it to a 16-bit TIFF first."
        )
    return _read_pillow(path, "png")


def _read_jpeg(path: Path) -> ImageData:
    return _read_pillow(path, "jpeg")


def _read_pillow(path: Path, fmt: str) -> ImageData:
    array = iio.imread(path, plugin="pillow", rotate=True)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    axes = {2: "YX", 3: "YXC"}.get(array.ndim)
    return ImageData(array=array, axes=axes, metadata={}, format=fmt)


def _reason(exc: BaseException) -> str:
    """The most specific message in an exception chain (imageio wraps the codec's error)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


_READERS: dict[str, Callable[[Path], ImageData]] = {
    "tiff": _read_tiff,
    "png": _read_png,
    "jpeg": _read_jpeg,
}


# --- writing -------------------------------------------------------------------------------------


def _normalise_format(format: str) -> str:
    name = format.lower().lstrip(".")
    if name not in _FORMAT_NAMES:
        raise InputError(f"Unknown image format {format!r}; use tiff, png or jpeg.")
    return _FORMAT_NAMES[name]


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return os.path.normcase(a.resolve()) == os.path.normcase(b.resolve())


def _atomic_write(path: Path, fmt: str, write: Callable[[BinaryIO], None]) -> None:
    """Run `write` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    suffix = path.suffix if path.suffix.lower().lstrip(".") in _FORMAT_NAMES else f".{fmt}"
    temp = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}{suffix}")
    try:
        fh = temp.open("xb")
    except OSError as exc:
        raise InputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
    try:
        with fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if isinstance(exc, OSError):
            raise InputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
        if isinstance(exc, (ValueError, TypeError)):
            raise InputError(f"Cannot write {path} as {fmt.upper()}: {exc}") from exc
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows it (not on Windows)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_tiff(fh: BinaryIO, array: np.ndarray, axes: str | None, meta: dict[str, Any]) -> None:
    tifffile.imwrite(fh, array, **tiff_options(array.shape, array.dtype, axes, meta))


def tiff_options(
    shape: tuple[int, ...], dtype: np.dtype, axes: str | None, meta: dict[str, Any]
) -> dict[str, Any]:
    """`tifffile.imwrite`'s options that keep `axes` and `meta` (as `read_image` gives them): an
    ImageJ hyperstack when the axes and dtype allow it, else the axes in shaped metadata."""
    options: dict[str, Any] = {}
    if meta.get("resolution"):
        x, y = meta["resolution"]
        options["resolution"] = (float(x), float(y))
        options["resolutionunit"] = int(meta.get("resolutionunit", 1))
    imagej_axes = _imagej_axes(shape, np.dtype(dtype), axes)
    if imagej_axes:
        return {
            **options,
            "imagej": True,
            "metadata": {**meta.get("imagej", {}), "axes": imagej_axes},
        }
    samples_last = (
        len(shape) >= 3
        and shape[-1] > 1
        and (axes.endswith("C") if axes else meta.get("photometric") == "rgb")
    )
    rgb = samples_last and shape[-1] in (3, 4)
    return {
        **options,
        "photometric": "rgb" if rgb else "minisblack",
        "planarconfig": "contig" if samples_last else None,
        "metadata": {"axes": axes} if axes else {},
    }


def _imagej_axes(shape: tuple[int, ...], dtype: np.dtype, axes: str | None) -> str | None:
    """ImageJ's axes for `axes` ("YXC" RGB becomes "YXS"), or None when ImageJ cannot hold it."""
    if not axes or dtype not in _IMAGEJ_DTYPES:
        return None
    samples = ""
    if axes.endswith("YXC"):
        if dtype != np.uint8 or shape[-1] != 3:
            return None
        axes, samples = axes[:-1], "S"
    order = iter(_AXES)
    if axes.endswith("YX") and all(letter in order for letter in axes):
        return axes + samples
    return None


def _write_png(fh: BinaryIO, array: np.ndarray, axes: str | None, meta: dict[str, Any]) -> None:
    iio.imwrite(fh, _drop_single_channel(array), extension=".png", plugin="pillow")


def _write_jpeg(fh: BinaryIO, array: np.ndarray, axes: str | None, meta: dict[str, Any]) -> None:
    iio.imwrite(fh, _drop_single_channel(array), extension=".jpg", plugin="pillow", quality=95)


def _drop_single_channel(array: np.ndarray) -> np.ndarray:
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array


_WRITERS: dict[str, Callable[[BinaryIO, np.ndarray, str | None, dict[str, Any]], None]] = {
    "tiff": _write_tiff,
    "png": _write_png,
    "jpeg": _write_jpeg,
}
