"""Layer helpers of the napari plugin: axes checks, rectangles, map placement."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Shapes

from napari_allinone._layers import Region, axes_problem, crop, map_placement, rectangles


@pytest.mark.parametrize(
    ("axes", "shape", "ok"),
    [
        ("YX", (8, 8), True),
        ("ZYX", (2, 8, 8), True),
        ("YXC", (8, 8, 3), True),
        ("TZYX", (2, 2, 8, 8), True),
        ("YX", (2, 8, 8), False),
        ("ZZX", (2, 8, 8), False),
        ("QYX", (2, 8, 8), False),
        ("ZCY", (2, 3, 8), False),
    ],
)
def test_axes_problem(axes: str, shape: tuple[int, ...], ok: bool) -> None:
    assert (axes_problem(axes, shape) is None) == ok


def test_rectangles_are_in_image_pixels_and_clipped() -> None:
    image = Image(np.zeros((40, 60)), scale=(2, 2), translate=(10, 0))
    inside = [[10, 0], [10, 20], [30, 20], [30, 0]]
    overhanging = [[60, 100], [60, 200], [200, 200], [200, 100]]
    outside = [[-50, -50], [-50, -40], [-40, -40], [-40, -50]]
    shapes = Shapes([inside, overhanging, outside], shape_type="rectangle")
    assert rectangles(shapes, image) == [(0, 10, 0, 10), (25, 40, 50, 60)]


def test_crop_moves_the_region() -> None:
    region = Region(np.zeros((10, 12)), "YX", (2.0, 3.0), (1.0, 1.0))
    part = crop(region, (2, 6, 3, 9))
    assert part.data.shape == (4, 6)
    assert part.translate == (5.0, 10.0)


def test_map_cells_are_centred_on_their_pixels() -> None:
    region = Region(np.zeros((3, 16, 16)), "ZYX", (5.0, 1.0, 2.0), (0.0, 10.0, 20.0))
    scale, translate = map_placement(region, (8.0, 8.0))
    assert scale == (5.0, 8.0, 16.0)
    # cell 0 covers pixels 0..7, whose centre is pixel 3.5
    assert translate == (0.0, 10.0 + 3.5, 20.0 + 2 * 3.5)
