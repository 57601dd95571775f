"""Local gain (`allinone.infer.local_gain`): which pixels are lifted, by how much, and that the
pass divides the restoration by the same gain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allinone.infer.axes import PlaneLayout
from allinone.infer.chain import RestoreChain
from allinone.infer.local_gain import (
    CAP,
    LEAST_TOP,
    TARGET,
    TOP,
    gain_map,
    gained_pass,
    lift,
    top_gain,
)
from allinone.infer.normalize import fit_normalization
from allinone.infer.options import RestoreOptions


def test_the_top_gain_lifts_the_bulk_to_the_target_within_its_bounds() -> None:
    assert top_gain(0.6) == LEAST_TOP
    assert top_gain(0.02) == pytest.approx(TARGET / 0.02)
    assert top_gain(1e-4) == top_gain(-0.1) == TOP


def _dim_field_with_squares(side: int, threshold: float = 0.3) -> np.ndarray:
    """A noisy 256-pixel field of blobs at about 100 counts (27 % of the pixels; 3 % with
    `threshold` 0.9), four bright squares of `side` pixels at 4000 counts."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:256, :256]
    blobs = np.sin(yy / 9.0) * np.cos(xx / 7.0) > threshold
    field = 20 + 80 * blobs + rng.normal(0, 3, (256, 256))
    for y, x in ((32, 32), (32, 160), (160, 32), (160, 160)):
        field[y : y + side, x : x + side] = 4000
    return field.astype(np.float32)


@pytest.mark.parametrize("side", [12, 56])
def test_the_bulk_is_the_dim_structure_beside_small_or_large_bright_objects(side: int) -> None:
    norm = fit_normalization(_dim_field_with_squares(side), "percentile")
    structure = (100 - norm.offset) / norm.scale  # the blobs' level in network units
    assert norm.bulk is not None
    assert norm.bulk == pytest.approx(structure, rel=0.15)
    assert top_gain(norm.bulk) > 10 * LEAST_TOP


def test_the_bulk_of_a_plane_bright_on_under_5_percent_is_its_95th_percentile() -> None:
    plane = _dim_field_with_squares(0, threshold=0.9)
    norm = fit_normalization(plane, "percentile")
    expected = (np.percentile(plane, 95) - norm.offset) / norm.scale
    assert norm.bulk == pytest.approx(expected)
    assert top_gain(norm.bulk) > LEAST_TOP  # its background is far below the blobs'


def test_the_bulk_of_a_plane_bright_on_over_5_percent_is_read_among_its_dim_values() -> None:
    plane = _dim_field_with_squares(0)
    norm = fit_normalization(plane, "percentile")
    units = (plane - norm.offset) / norm.scale
    assert np.percentile(units, 95) >= TARGET
    assert norm.bulk == pytest.approx(np.percentile(units[units < TARGET], 95), rel=0.02)


def test_a_plane_bright_everywhere_is_not_lifted() -> None:
    x = torch.full((1, 3, 64, 64), 0.8)
    assert bool((gain_map(x, TOP) == 1).all())


def test_only_pixels_far_from_a_bright_spot_are_lifted_and_no_more_than_the_top() -> None:
    x = torch.full((1, 3, 160, 160), 0.02)
    x[..., 4:10, 4:10] = 1.0
    gain = gain_map(x, 16.0)[0, 0]
    assert float(gain[7, 7]) == 1.0
    assert float(gain[150, 150]) == pytest.approx(16.0)
    assert float(gain.max()) <= 16.0 and float(gain.min()) >= 1.0
    log = gain.log()
    steps = torch.cat([log.diff(dim=0).abs().flatten(), log.diff(dim=1).abs().flatten()])
    assert float(steps.max()) < 0.5  # a ramp over pixels, not a 16-fold step


def test_the_pass_divides_the_restoration_by_the_gain_it_lifted_by() -> None:
    seen = []

    def identity(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append(x)
        return x.clone(), torch.zeros(x.shape[0], 6)

    x = torch.full((1, 3, 160, 160), 0.02)
    x[..., 4:10, 4:10] = 1.0
    restored, _ = gained_pass(identity, 16.0)(x)
    assert float(seen[0].max()) <= CAP
    assert float(seen[0][0, 0, 150, 150]) == pytest.approx(16 * 0.02)
    uncapped = seen[0] < CAP
    assert torch.allclose(restored[uncapped], x[uncapped])


def test_pixels_with_a_gain_of_one_reach_the_network_as_they_are() -> None:
    x = torch.full((1, 3, 64, 64), 0.8)
    x[..., 30:34, 30:34] = 3.0  # brighter than the cap
    lifted, gain = lift(x, TOP)
    assert bool((gain == 1).all()) and torch.equal(lifted, x)


@pytest.mark.parametrize(
    ("shape", "axes", "scaling", "lifted"),
    [
        ((32, 32), "YX", "percentile", True),
        ((32, 32), "YX", "auto", True),
        ((32, 32), "YX", "range", False),
        ((32, 32, 3), "YXC", "percentile", False),
    ],
    ids=["grey-percentile", "grey-auto", "grey-range", "colour"],
)
def test_the_chain_lifts_grey_planes_scaled_by_their_percentiles(
    shape: tuple[int, ...], axes: str, scaling: str, lifted: bool
) -> None:
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    norm = fit_normalization(image, "percentile" if scaling == "auto" else scaling)
    layout = PlaneLayout.of(shape, axes)
    chain = RestoreChain(RestoreOptions(scaling=scaling), layout, norm)
    assert (chain.gain_top is not None) is lifted
    off = RestoreOptions(scaling=scaling, local_gain=False)
    assert RestoreChain(off, layout, norm).gain_top is None
