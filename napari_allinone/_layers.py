"""Layer helpers: axes, the displayed plane, rectangles, and the properties of output layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from napari.layers import Image, Shapes
    from napari.viewer import Viewer

Rect = tuple[int, int, int, int]
"""(y0, y1, x0, x1) in the last two axes, half-open."""


@dataclass(frozen=True)
class Region:
    """An array cut out of a layer, with where it sits in the world (its last two axes)."""

    data: Any
    axes: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]


def layer_data(layer: Image) -> Any:
    """The full-resolution array of an image layer (level 0 of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


def guess_layer_axes(layer: Image) -> str:
    """The engine's guess of the axes of `layer`'s array."""
    from allinone.infer.axes import guess_axes

    return guess_axes(tuple(layer_data(layer).shape), rgb=layer.rgb)


def axes_problem(axes: str, shape: tuple[int, ...]) -> str | None:
    """Why `axes` cannot describe an array of `shape` (the engine's words), or None."""
    from allinone.errors import InputError
    from allinone.infer.axes import normalize_axes

    try:
        normalize_axes(axes, shape)
    except InputError as error:
        return str(error)
    return None


def _displayed_dims(layer: Image, viewer: Viewer) -> list[int]:
    """The layer's two displayed dimensions, in increasing order."""
    offset = viewer.dims.ndim - layer.ndim
    dims = sorted(d - offset for d in viewer.dims.order[-2:])
    if len(dims) < 2 or dims[0] < 0:
        return [layer.ndim - 2, layer.ndim - 1]
    return dims


def displayed_plane(layer: Image, viewer: Viewer) -> Region:
    """The 2-D plane of `layer` shown at the viewer's current step (RGB kept whole)."""
    data = layer_data(layer)
    position = layer.world_to_data(viewer.dims.point)
    dims = _displayed_dims(layer, viewer)
    index: list[Any] = []
    for axis in range(layer.ndim):
        if axis in dims:
            index.append(slice(None))
        else:
            index.append(int(np.clip(np.round(position[axis]), 0, data.shape[axis] - 1)))
    if layer.rgb:
        index.append(slice(None))
    plane = np.asarray(data[tuple(index)])
    return Region(
        data=plane,
        axes="YXC" if layer.rgb else "YX",
        scale=tuple(float(layer.scale[d]) for d in dims),
        translate=tuple(float(layer.translate[d]) for d in dims),
    )


def whole_layer(layer: Image, axes: str) -> Region:
    """All of `layer`, described by `axes`."""
    return Region(
        data=layer_data(layer),
        axes=axes,
        scale=tuple(float(s) for s in layer.scale),
        translate=tuple(float(t) for t in layer.translate),
    )


def rectangles(shapes: Shapes, image: Image) -> list[Rect]:
    """Bounding boxes of `shapes`, in pixels of `image`'s last two axes, clipped to it."""
    ny, nx = layer_data(image).shape[image.ndim - 2 : image.ndim]
    boxes = []
    for vertices in shapes.data:
        pixels = np.array([image.world_to_data(shapes.data_to_world(v))[-2:] for v in vertices])
        (y0, x0), (y1, x1) = np.floor(pixels.min(0) + 0.5), np.floor(pixels.max(0) + 0.5)
        y0, y1 = int(np.clip(y0, 0, ny)), int(np.clip(y1, 0, ny))
        x0, x1 = int(np.clip(x0, 0, nx)), int(np.clip(x1, 0, nx))
        if y1 > y0 and x1 > x0:
            boxes.append((y0, y1, x0, x1))
    return boxes


def crop(region: Region, box: Rect) -> Region:
    """The part of a 2-D (or RGB) region inside `box`, with its world position."""
    y0, y1, x0, x1 = box
    (sy, sx), (ty, tx) = region.scale[-2:], region.translate[-2:]
    return Region(
        data=region.data[y0:y1, x0:x1],
        axes=region.axes,
        scale=(sy, sx),
        translate=(ty + sy * y0, tx + sx * x0),
    )


def output_properties(source: Image, region: Region, name: str, info: dict) -> dict:
    """Keyword arguments of `viewer.add_image` for a result that looks like `source`."""
    properties: dict[str, Any] = {
        "name": name,
        "scale": region.scale,
        "translate": region.translate,
        "metadata": {**source.metadata, "allinone": info},
        "rgb": source.rgb,
        "blending": source.blending,
    }
    if not source.rgb:
        properties.update(
            colormap=source.colormap,
            contrast_limits=tuple(source.contrast_limits),
            gamma=source.gamma,
        )
    return properties


def map_placement(
    region: Region, map_scale: tuple[float, float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Scale and translate of a per-tile map (lead axes, then cells along Y and X).

    Each cell centre sits on the centre of the pixels it covers; lead axes (Z, T, C of a
    stack) keep the region's scale and translate.
    """
    plane = "YXC" if region.axes.endswith("C") else "YX"
    lead = [i for i, letter in enumerate(region.axes) if letter not in plane]
    y, x = region.axes.index("Y"), region.axes.index("X")
    scale = [region.scale[i] for i in lead]
    translate = [region.translate[i] for i in lead]
    for axis, cells in ((y, map_scale[0]), (x, map_scale[1])):
        scale.append(region.scale[axis] * cells)
        translate.append(region.translate[axis] + region.scale[axis] * (cells - 1) / 2)
    return tuple(scale), tuple(translate)
