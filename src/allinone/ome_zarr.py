"""OME-Zarr images (OME-NGFF 0.4 and 0.5) in, OME-NGFF 0.4 out, through zarr and ome-zarr-models.

`read_ome_zarr` opens the highest resolution of a store's first multiscale image as a lazy zarr
array and keeps what a result needs to be written back the same way: the axes (names, types,
units), the level's scale and translation, the multiscale's name and the channels' `omero`
block. `ome_zarr_output` writes a new store into a hidden folder beside the target, chunk by
chunk as the restore produces it; when the block ends cleanly it adds a pyramid (each level
halves Y and X by a block mean) and renames the folder into place. On failure or interrupt the
folder is removed, and an existing store is replaced only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np

from allinone.errors import InputError

SUFFIXES = (".zarr",)
"""A path whose name ends so is an OME-Zarr store (``image.ome.zarr`` included)."""
PYRAMID_MIN = 256
"""The pyramid stops at the first level whose Y and X are both at most this many pixels."""
_SPACE = {"X", "Y", "Z"}


def is_ome_zarr(path: str | os.PathLike[str]) -> bool:
    """True when `path` names an OME-Zarr store (by its suffix)."""
    return Path(path).name.lower().endswith(SUFFIXES)


def read_ome_zarr(path: Path) -> tuple[Any, str, dict[str, Any]]:
    """(level-0 zarr array, engine axes, {"ngff": ...}) of the first image in the store."""
    import zarr
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v04 import Image as Image04
    from ome_zarr_models.v05 import Image as Image05

    if not path.is_dir():
        raise InputError(f"Cannot read {path}: no such OME-Zarr folder.")
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as exc:
        raise InputError(f"Cannot read {path}: it is not a zarr store ({exc}).") from exc
    try:
        model = open_ome_zarr(group)
    except Exception as exc:
        attributes: dict[str, Any] = dict(group.attrs)
        if "multiscales" in attributes or "multiscales" in attributes.get("ome", {}):
            reason = Image04.from_zarr if "multiscales" in attributes else Image05.from_zarr
            raise InputError(
                f"Cannot read {path}: its OME-NGFF metadata is not valid "
                f"({_first_error(reason, group)})."
            ) from exc
        raise InputError(
            f"Cannot read {path}: the zarr store has no OME-NGFF image metadata "
            "(multiscales); write it with an OME-Zarr tool (ome-zarr, bioformats2raw, napari)."
        ) from exc
    if not isinstance(model, (Image04, Image05)):
        raise InputError(
            f"Cannot read {path}: it holds an OME-Zarr {type(model).__name__}, not an image; "
            "open one of its images instead."
        )
    image = model.attributes if isinstance(model, Image04) else model.attributes.ome
    multiscale = image.multiscales[0]
    names = [axis.name for axis in multiscale.axes]
    axes = "".join(name.upper() if isinstance(name, str) else "?" for name in names)
    if len(set(axes)) != len(axes) or not set(axes) <= set("TCZYX"):
        raise InputError(f"Cannot read {path}: unsupported OME-Zarr axes {names}.")
    dataset = multiscale.datasets[0]
    array = group[dataset.path]
    assert isinstance(array, zarr.Array)  # the image model validated its datasets as arrays
    scale, translation = _transforms(dataset.coordinateTransformations, len(names))
    ome = cast(dict[str, Any], group.attrs.get("ome", {}))
    ngff = {
        "axes": [axis.model_dump(exclude_none=True) for axis in multiscale.axes],
        "scale": scale,
        "translation": translation,
        "name": multiscale.name,
        "omero": group.attrs.get("omero") or ome.get("omero"),
        "chunks": tuple(int(c) for c in array.chunks),
    }
    return array, axes, {"ngff": ngff}


def _first_error(validate, group) -> str:
    """The first validation error `validate(group)` raises, in one line."""
    try:
        validate(group)
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if callable(errors) and errors():
            first = errors()[0]
            return f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        return str(exc).splitlines()[0]
    return "unknown reason"


def _transforms(transforms, ndim: int) -> tuple[list[float], list[float] | None]:
    scale, translation = [1.0] * ndim, None
    for transform in transforms:
        if transform.type == "scale" and hasattr(transform, "scale"):
            scale = [float(v) for v in transform.scale]
        elif transform.type == "translation" and hasattr(transform, "translation"):
            translation = [float(v) for v in transform.translation]
    return scale, translation


def ngff_from_tiff(axes: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """The `ngff` metadata of a TIFF's axes, resolution and ImageJ spacing (as `read_image`
    gives them), so that a TIFF converted to OME-Zarr keeps its pixel sizes."""
    imagej = metadata.get("imagej", {})
    unit = "micrometer" if imagej.get("unit") in ("um", "µm", "\\u00B5m", "micron") else None
    x_res, y_res = metadata.get("resolution", (1.0, 1.0))
    sizes = {"X": 1 / x_res if x_res else 1.0, "Y": 1 / y_res if y_res else 1.0}
    sizes["Z"] = float(imagej.get("spacing", 1.0))
    return ngff_of(axes, [sizes.get(letter, 1.0) for letter in axes], unit)


def ngff_of(axes: str, scale, unit: str | None = None) -> dict[str, Any]:
    """The `ngff` metadata of an image with `axes` and one `scale` entry per axis; spatial
    axes get `unit` when given."""
    entries = []
    for letter in axes:
        entry: dict[str, Any] = {"name": letter.lower(), "type": _axis_type(letter)}
        if letter in _SPACE and unit:
            entry["unit"] = unit
        entries.append(entry)
    scale = [float(value) for value in scale]
    return {"axes": entries, "scale": scale, "translation": None, "name": None, "omero": None}


def _axis_type(letter: str) -> str:
    return {"T": "time", "C": "channel"}.get(letter, "space")


@contextlib.contextmanager
def ome_zarr_output(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str, ngff: dict[str, Any]
) -> Iterator[Any]:
    """A writable level-0 zarr array of a new OME-Zarr store that becomes `path` (with its
    pyramid) when the block ends cleanly. `ngff` as `read_ome_zarr` or `ngff_from_tiff` give."""
    import zarr

    temp = path.with_name(f".{path.name}.partial-{secrets.token_hex(6)}")
    try:
        levels = _pyramid_shapes(shape, axes)
        group = _create(temp, levels, np.dtype(dtype), axes, ngff)
        yield group["0"]
        _fill_pyramid(zarr.open_group(temp, mode="r+"), len(levels), axes)
        _replace(temp, path)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise InputError(f"Cannot write {path}: {exc.strerror or exc}.") from exc
        raise


def _pyramid_shapes(shape: tuple[int, ...], axes: str) -> list[tuple[int, ...]]:
    y, x = axes.index("Y"), axes.index("X")
    levels = [tuple(shape)]
    while max(levels[-1][y], levels[-1][x]) > PYRAMID_MIN:
        level = list(levels[-1])
        level[y], level[x] = -(-level[y] // 2), -(-level[x] // 2)
        levels.append(tuple(level))
    return levels


def _chunks(shape: tuple[int, ...], axes: str, like: tuple[int, ...] | None) -> tuple[int, ...]:
    if like is not None and len(like) == len(shape):
        return tuple(min(c, n) for c, n in zip(like, shape, strict=True))
    pairs = zip(axes, shape, strict=True)
    return tuple(min(n, 1024) if letter in "YX" else 1 for letter, n in pairs)


def _create(temp: Path, levels, dtype: np.dtype, axes: str, ngff: dict[str, Any]):
    import zarr
    from ome_zarr_models.v04 import Image
    from ome_zarr_models.v04.axes import Axis
    from pydantic_zarr.v2 import ArraySpec

    y, x = axes.index("Y"), axes.index("X")
    base_scale = list(ngff["scale"])
    base_translation = list(ngff.get("translation") or [0.0] * len(axes))
    specs: list[ArraySpec] = []
    scales: list[list[float]] = []
    translations: list[list[float] | None] = []
    for k, level in enumerate(levels):
        specs.append(
            ArraySpec(
                shape=level,
                dtype=dtype.str,
                chunks=_chunks(level, axes, ngff.get("chunks")),
                attributes={},
                compressor={"id": "zstd", "level": 3},
                fill_value=0,
                order="C",
                filters=None,
                dimension_separator="/",
            )
        )
        scale, translation = list(base_scale), list(base_translation)
        for axis in (y, x):
            scale[axis] = base_scale[axis] * 2**k
            translation[axis] = base_translation[axis] + (2**k - 1) / 2 * base_scale[axis]
        scales.append(scale)
        translations.append(translation if (k or ngff.get("translation")) else None)
    image = Image.new(
        array_specs=specs,
        paths=[str(k) for k in range(len(levels))],
        axes=[Axis(**entry) for entry in ngff["axes"]],
        scales=scales,
        translations=translations,
        name=ngff.get("name"),
        multiscale_type="mean" if len(levels) > 1 else None,
    )
    group = image.to_zarr(zarr.storage.LocalStore(temp), path="")
    if ngff.get("omero"):
        group.attrs["omero"] = ngff["omero"]
    return group


def _fill_pyramid(group, count: int, axes: str) -> None:
    """Level k+1 is level k's 2x2 block mean in Y and X (rounded for integer dtypes)."""
    import dask.array as da

    y, x = axes.index("Y"), axes.index("X")
    for k in range(1, count):
        source = da.from_zarr(group[str(k - 1)])
        target = group[str(k)]
        pad = [(0, 0)] * source.ndim
        pad[y], pad[x] = (0, source.shape[y] % 2), (0, source.shape[x] % 2)
        padded = da.pad(source.astype(np.float64), pad, mode="edge")
        halved = da.coarsen(np.mean, padded, {y: 2, x: 2})
        if np.dtype(target.dtype).kind in "ui":
            info = np.iinfo(target.dtype)
            halved = da.clip(da.round(halved), info.min, info.max)
        da.store(halved.astype(target.dtype).rechunk(target.chunks), target, lock=False)


def _replace(temp: Path, path: Path) -> None:
    """Put the complete store `temp` at `path`, replacing an existing one only now."""
    if not path.exists():
        os.replace(temp, path)
        return
    old = path.with_name(f".{path.name}.replaced-{secrets.token_hex(6)}")
    os.replace(path, old)
    os.replace(temp, path)
    shutil.rmtree(old, ignore_errors=True)
