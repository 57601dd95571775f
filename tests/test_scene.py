"""Scene-scale haze: the overview, the tone fit, and how the Restorer applies them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from allinone.infer.normalize import Normalization
from allinone.infer.scene import (
    HAZE,
    SIDE,
    SceneTone,
    fit_tone,
    overview,
    overview_units,
    scene_tone,
)
from allinone.types import DEGRADATIONS

RNG = np.random.default_rng(5)


def _block_means(plane: np.ndarray, factor: int) -> np.ndarray:
    rows = range(0, plane.shape[0], factor)
    cols = range(0, plane.shape[1], factor)
    return np.array(
        [[plane[y : y + factor, x : x + factor].mean(axis=(0, 1)) for x in cols] for y in rows]
    )


def test_overview_is_the_block_means_whatever_the_chunks() -> None:
    plane = RNG.random((37, 50, 3)).astype(np.float32)
    expected = _block_means(plane.astype(np.float64), 4)
    whole = overview([plane], 50, 4)
    chunked = overview([plane[:5], plane[5:18], plane[18:19], plane[19:]], 50, 4)
    assert whole.shape == (10, 13, 3)
    np.testing.assert_allclose(whole, expected, rtol=1e-6)
    np.testing.assert_array_equal(chunked, whole)


def _textured(shape=(1, 3, 32, 32)) -> torch.Tensor:
    return torch.from_numpy(RNG.random(shape).astype(np.float32))


def test_fit_tone_recovers_a_local_affine_map() -> None:
    source = _textured()
    gain, offset = fit_tone(source, 0.5 * source + 0.2)
    inner = (..., slice(4, -4), slice(4, -4))
    assert torch.allclose(gain[inner], torch.tensor(0.5), atol=0.03)
    assert torch.allclose(offset[inner], torch.tensor(0.2), atol=0.02)


def test_fit_tone_keeps_an_unchanged_image_and_flat_regions() -> None:
    source = _textured()
    gain, offset = fit_tone(source, source)
    assert torch.allclose(gain, torch.ones_like(gain), atol=1e-4)
    assert torch.allclose(offset, torch.zeros_like(offset), atol=1e-4)
    flat = torch.full((1, 3, 16, 16), 0.3)
    gain, offset = fit_tone(flat, flat - 0.2)
    assert torch.allclose(gain, torch.ones_like(gain), atol=1e-4)
    assert torch.allclose(offset, torch.full_like(offset, -0.2), atol=1e-4)


def test_scene_tone_interpolates_its_fields_between_block_centres() -> None:
    gain = RNG.random((3, 2, 2)).astype(np.float32)
    tone = SceneTone(gain, np.zeros_like(gain), factor=3)
    ones = np.ones((2, 2, 3), dtype=np.float32)
    centres = np.array([1, 4])
    np.testing.assert_allclose(tone.apply(ones, centres, centres), gain.transpose(1, 2, 0))
    edges = np.array([0, 5])
    np.testing.assert_allclose(tone.apply(ones, edges, edges), gain.transpose(1, 2, 0))
    middle = tone.apply(ones[:1, :1], np.array([1]), np.array([2.5]))
    np.testing.assert_allclose(middle[0, 0], gain[:, 0, :].mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize(
    ("logit", "weight"),
    [(50.0, 1.0), (float(np.log(3)), 1.0), (float(np.log(5 / 3)), 0.5), (0.0, 0.0), (-50.0, 0.0)],
)
@pytest.mark.parametrize(("dtype", "airlight"), [(np.uint8, 0.11), (np.uint16, 0.1)])
def test_scene_tone_carries_the_overviews_change_from_p_half_to_all_at_three_quarters(
    haze_pass, logit, weight, dtype, airlight
) -> None:
    plane = RNG.random((2 * SIDE + 7, SIDE + 1, 3)).astype(np.float32)
    norm = Normalization(offset=10.0, scale=100.0, dtype=np.dtype(dtype))
    tone = scene_tone(haze_pass(logit), [plane], plane.shape[:2], norm)
    rows, cols = np.arange(plane.shape[0]), np.arange(plane.shape[1])
    # 8-bit: 0.1 taken off at the overview's unit (the high percentile, 110) is 0.11 network
    # units; other dtypes are seen in network units
    expected = plane - weight * airlight
    np.testing.assert_allclose(tone.apply(plane, rows, cols), expected, atol=1e-5)


def test_only_8_bit_overviews_keep_the_black_level() -> None:
    assert overview_units(Normalization(10.0, 100.0, np.dtype(np.uint8))) == (100 / 110, 10 / 110)
    assert overview_units(Normalization(0.0, 255.0, np.dtype(np.uint8))) == (1.0, 0.0)
    assert overview_units(Normalization(500.0, 1000.0, np.dtype(np.uint16))) == (1.0, 0.0)
    assert overview_units(Normalization(-0.5, 1.0, np.dtype(np.float32))) == (1.0, 0.0)


def test_planes_no_larger_than_the_overview_get_no_correction(haze_pass) -> None:
    small = RNG.random((SIDE, SIDE // 2, 3)).astype(np.float32)
    norm = Normalization(0.0, 1.0, np.dtype(np.float32))
    assert scene_tone(haze_pass(50.0), [small], small.shape[:2], norm) is None


@pytest.fixture
def dehazing_identity(identity_restorer, haze_pass, monkeypatch: pytest.MonkeyPatch):
    """The identity Restorer whose overview pass takes 0.1 off and is sure of haze."""
    monkeypatch.setattr(identity_restorer, "overview_pass", haze_pass(50.0))
    return identity_restorer


@pytest.mark.parametrize("tile", [0, 64])
def test_restore_removes_scene_haze_before_the_tiles(dehazing_identity, tile: int) -> None:
    image = RNG.uniform(0.3, 0.9, (SIDE + 72, SIDE + 40, 3)).astype(np.float32)
    restored = dehazing_identity.restore(image, tile=tile, scaling="range")
    np.testing.assert_allclose(restored, image - 0.1, atol=1e-5)
    kept = dehazing_identity.restore(image, tile=tile, scaling="range", scene_haze=False)
    np.testing.assert_allclose(kept, image, atol=1e-5)


def test_planes_no_larger_than_the_overview_are_restored_as_they_were(dehazing_identity) -> None:
    image = RNG.uniform(0.3, 0.9, (SIDE, SIDE, 3)).astype(np.float32)
    np.testing.assert_allclose(dehazing_identity.restore(image, scaling="range"), image, atol=1e-5)


def test_each_plane_of_a_stack_and_each_dask_block_gets_its_own_overview(
    dehazing_identity,
) -> None:
    import dask.array as da

    stack = RNG.uniform(0.3, 0.9, (2, SIDE + 20, SIDE + 20, 3)).astype(np.float32)
    restored = dehazing_identity.restore(stack, axes="ZYXC", scaling="range")
    np.testing.assert_allclose(restored, stack - 0.1, atol=1e-5)
    lazy = dehazing_identity.restore_dask(
        da.from_array(stack, chunks=(1, 64, 64, 3)), axes="ZYXC", scaling="range"
    )
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"), restored)


def test_grey_planes_are_never_dehazed_at_scene_scale(dehazing_identity) -> None:
    stack = RNG.uniform(0.3, 0.9, (2, SIDE + 20, SIDE + 20)).astype(np.float32)
    restored = dehazing_identity.restore(stack, axes="ZYX", scaling="range")
    np.testing.assert_allclose(restored, stack, atol=1e-5)


def test_the_overview_pass_runs_the_network_on_any_size(tiny_restorer) -> None:
    x = _textured((1, 3, 50, 70))
    restored, logits = tiny_restorer.overview_pass(x)
    assert restored.shape == x.shape and restored.dtype == torch.float32
    assert logits.shape == (1, len(DEGRADATIONS))


def test_analyze_mixes_the_overviews_haze_into_the_map_and_the_whole(
    tiny_restorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = RNG.integers(0, 255, (3 * SIDE - 40, SIDE + 8, 3), dtype=np.uint8)
    unweighted = (np.array(4.0, dtype=np.float32), 0.0)  # the tiles' logits alone
    monkeypatch.setattr(tiny_restorer, "_overview_haze", lambda source, encode: unweighted)
    tiles = tiny_restorer.analyze(image, flips=False)
    overview = (np.array(4.0, dtype=np.float32), 0.75)
    monkeypatch.setattr(tiny_restorer, "_overview_haze", lambda source, encode: overview)
    mixed = tiny_restorer.analyze(image, flips=False)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    expected_map = 0.25 * logit(tiles.maps[HAZE]) + 0.75 * 4.0
    np.testing.assert_allclose(logit(mixed.maps[HAZE]), expected_map, rtol=1e-4, atol=1e-4)
    expected = 1 / (1 + np.exp(-expected_map.mean()))
    assert mixed.probabilities["haze"] == pytest.approx(expected, rel=1e-4)
    others = [c for c in range(len(DEGRADATIONS)) if c != HAZE]
    np.testing.assert_array_equal(mixed.maps[others], tiles.maps[others])


def test_each_planes_overview_gives_its_haze_weighted_by_the_shrink(tiny_restorer) -> None:
    from allinone.infer.axes import PlaneLayout
    from allinone.infer.normalize import fit_normalization
    from allinone.infer.pipeline import PlaneSource
    from allinone.infer.scene import plane_overview

    stack = RNG.integers(0, 4000, (2, 2 * SIDE + 10, SIDE, 3), dtype=np.uint16)
    layout = PlaneLayout.of(stack.shape, "ZYXC")
    source = PlaneSource(layout, stack, fit_normalization(stack))

    def encode(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return tiny_restorer.net.analyze(x)

    def haze_of(z: int) -> float:
        chunks = source.input_chunks((z,), None)
        view = plane_overview(chunks, layout.plane_shape, source.norm)
        return float(encode(tiny_restorer._padded(view.image)).mean(dim=(2, 3))[0, HAZE])

    logits, weight = tiny_restorer._overview_haze(source, encode)
    assert weight == pytest.approx(2 / 3)  # 266 rows shrunk 3 times
    assert haze_of(0) != pytest.approx(haze_of(1))
    np.testing.assert_allclose(logits, [haze_of(0), haze_of(1)], rtol=1e-5)
