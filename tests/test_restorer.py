"""The Restorer's contract: shapes, dtypes, axes, alpha, NaN, progress, cancelling, analysis."""

from __future__ import annotations

import inspect
import threading
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from allinone import DEGRADATIONS
from allinone.devices import cpu_has_bf16
from allinone.errors import Cancelled, InputError
from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Composition, Restorer
from allinone.infer.tiling import TileGrid
from allinone.jobs import Progress

DTYPES = [np.uint8, np.uint16, np.int16, np.int32, np.float32, np.float64]
SHAPES = {
    "YX": (20, 27),
    "YXC": (20, 27, 3),
    "CYX": (2, 20, 27),
    "ZYX": (3, 20, 27),
    "TZYX": (2, 2, 20, 27),
    "TCZYX": (2, 2, 2, 20, 27),
}


def random_image(shape, dtype, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(info.min, -1000), min(info.max, 5000)
        return rng.integers(low, high, size=shape, endpoint=True).astype(dtype)
    return rng.normal(3.0, 2.0, size=shape).astype(dtype)


@pytest.mark.parametrize("axes", list(SHAPES))
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_restore_keeps_shape_and_dtype(tiny_restorer, dtype, axes: str) -> None:
    image = random_image(SHAPES[axes], dtype)
    out = tiny_restorer.restore(image, axes=axes, overlap=8)
    assert out.shape == image.shape
    assert out.dtype == image.dtype
    if np.issubdtype(dtype, np.floating):
        assert np.isfinite(out).all()
    # not garbage: an untrained near-identity network keeps the image recognisable
    wide_in, wide_out = image.astype(np.float64).ravel(), out.astype(np.float64).ravel()
    assert np.corrcoef(wide_in, wide_out)[0, 1] > 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_float_output_is_the_kept_dtype_result_unrounded(tiny_restorer, dtype) -> None:
    image = random_image((2, 20, 27), dtype)
    kept = tiny_restorer.restore(image, axes="ZYX", overlap=8)
    unrounded = tiny_restorer.restore(
        image, axes="ZYX", options=RestoreOptions(overlap=8, float_output=True)
    )
    assert unrounded.dtype == np.float32 and unrounded.shape == image.shape
    info = np.iinfo(dtype)
    assert unrounded.min() >= info.min and unrounded.max() <= info.max
    assert not np.array_equal(unrounded, np.rint(unrounded))
    np.testing.assert_array_equal(np.rint(unrounded).astype(dtype), kept)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_output_leaves_float_images_alone(tiny_restorer, dtype) -> None:
    image = random_image((20, 27), dtype)
    out = tiny_restorer.restore(image, options=RestoreOptions(overlap=8, float_output=True))
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, tiny_restorer.restore(image, overlap=8))


def test_out_must_have_the_result_dtype(tiny_restorer) -> None:
    image = random_image((20, 27), np.uint16)
    with pytest.raises(InputError, match="dtype float32"):
        tiny_restorer.restore(
            image, out=np.empty(image.shape, np.uint16), options=RestoreOptions(float_output=True)
        )


def test_explicit_and_guessed_axes_agree(tiny_restorer) -> None:
    for axes in ("YX", "ZYX", "YXC", "TZYX"):
        image = random_image(SHAPES[axes], np.uint8)
        np.testing.assert_array_equal(
            tiny_restorer.restore(image, overlap=8), tiny_restorer.restore(image, axes, overlap=8)
        )


def test_planes_are_restored_independently_and_put_back_in_place(tiny_restorer) -> None:
    # one scaling for the whole stack (percentiles would be fitted to the stack, not the plane)
    stack = np.stack([random_image((20, 27), np.uint8, seed) for seed in range(3)])
    stack[1] //= 4  # planes that differ a lot
    together = tiny_restorer.restore(stack, axes="ZYX", overlap=8, scaling="range")
    for z in range(3):
        alone = tiny_restorer.restore(stack[z], axes="YX", overlap=8, scaling="range")
        assert np.abs(alone.astype(int) - together[z]).max() <= 1
    # the same stack with its axes in another order gives the same planes
    moved = tiny_restorer.restore(np.moveaxis(stack, 0, 2), axes="YXZ", overlap=8, scaling="range")
    assert np.abs(np.moveaxis(moved, 2, 0).astype(int) - together).max() <= 1


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_rgba_keeps_alpha_untouched(tiny_restorer, dtype) -> None:
    image = random_image((18, 21, 4), dtype, seed=5)
    image[..., 3] = random_image((18, 21), dtype, seed=6)
    out = tiny_restorer.restore(image, overlap=8)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(out[..., 3], image[..., 3])
    assert not np.array_equal(out[..., :3], image[..., :3])


def test_non_finite_pixels_are_kept_and_the_rest_is_finite(tiny_restorer) -> None:
    image = random_image((3, 24, 30), np.float32, seed=2)
    image[0, 3, 4] = np.nan
    image[0, 10, 10:14] = np.nan
    image[1, 5, 5] = np.inf
    image[1, 6, 6] = -np.inf
    image[2] = np.nan  # a plane with nothing finite
    out = tiny_restorer.restore(image, axes="ZYX", overlap=8)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(image))
    assert out[1, 5, 5] == np.inf and out[1, 6, 6] == -np.inf
    finite = np.isfinite(image)
    assert np.isfinite(out[finite]).all()
    # the NaNs do not leak into their neighbours' values
    neighbours = out[0, 2:5, 2:7][np.isfinite(image[0, 2:5, 2:7])]
    assert np.isfinite(neighbours).all()


def test_analyze_ignores_non_finite_pixels(tiny_restorer) -> None:
    """A plane with nothing finite (e.g. an empty slice of a stack) does not turn the whole
    composition into NaN."""
    image = random_image((3, 24, 30), np.float32, seed=3)
    image[0, :5, :5] = np.nan
    image[2] = np.nan
    composition = tiny_restorer.analyze(image, axes="ZYX")
    assert all(0.0 <= p <= 1.0 for p in composition.probabilities.values())
    assert np.isfinite(composition.maps).all()


def test_progress_counts_every_tile_up_to_the_total(tiny_restorer) -> None:
    calls: list[tuple[int, int]] = []
    image = random_image((2, 40, 50), np.uint16)
    tiny_restorer.restore(image, tile=16, overlap=8, progress=lambda d, t: calls.append((d, t)))
    assert calls
    dones = [d for d, _ in calls]
    assert dones == sorted(set(dones))  # strictly increasing
    totals = {t for _, t in calls}
    assert len(totals) == 1
    assert calls[-1] == (totals.pop(),) * 2
    assert calls[-1][0] == 2 * len(TileGrid.plan(40, 50, 16, 8).tiles())  # 2 planes


@pytest.fixture
def one_tile_batches(tiny_restorer, monkeypatch):
    """The shared Restorer, running one tile a batch (so small jobs have many batches)."""
    monkeypatch.setattr(tiny_restorer, "auto_batch", lambda grid: 1)
    return tiny_restorer


def test_cancel_with_a_callable(one_tile_batches) -> None:
    seen: list[int] = []
    image = random_image((32, 32), np.uint8)
    with pytest.raises(Cancelled, match="cancelled"):
        one_tile_batches.restore(
            image, tile=16, overlap=0, progress=lambda d, t: seen.append(d), cancel=lambda: seen
        )
    assert seen == [1]


def test_cancel_with_an_event(one_tile_batches) -> None:
    event = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        if done == 2:
            event.set()

    with pytest.raises(Cancelled):
        one_tile_batches.restore(
            random_image((32, 32), np.float32), tile=16, overlap=0, progress=progress, cancel=event
        )
    assert seen == [1, 2]
    with pytest.raises(Cancelled):  # already set: nothing runs
        one_tile_batches.analyze(random_image((32, 32), np.uint8), tile=16, cancel=event)


def test_cancelling_a_step_generator_between_batches(one_tile_batches) -> None:
    event = threading.Event()
    steps = one_tile_batches.restore_steps(
        random_image((32, 32), np.uint8), tile=16, overlap=0, cancel=event
    )
    first = next(steps)
    assert (first.done, first.total) == (1, 4)
    event.set()
    with pytest.raises(Cancelled):
        next(steps)


def test_restore_steps_is_a_generator_returning_the_array(one_tile_batches) -> None:
    image = random_image((2, 32, 32), np.uint16)
    steps = one_tile_batches.restore_steps(image, tile=16, overlap=0)
    assert inspect.isgenerator(steps)
    updates: list[Progress] = []

    def worker():
        result = yield from steps
        updates.append(result)

    collected = list(worker())
    assert all(isinstance(p, Progress) for p in collected)
    assert [p.done for p in collected] == list(range(1, 9))
    assert all(p.total == 8 and p.message for p in collected)
    (result,) = updates
    np.testing.assert_array_equal(result, one_tile_batches.restore(image, tile=16, overlap=0))


def test_analyze_steps_is_a_generator_returning_a_composition(tiny_restorer) -> None:
    steps = tiny_restorer.analyze_steps(random_image((20, 30), np.uint8))
    assert inspect.isgenerator(steps)

    def worker():
        return (yield from steps)

    job = worker()
    updates = []
    while True:
        try:
            updates.append(next(job))
        except StopIteration as stop:
            result = stop.value
            break
    assert updates and all(isinstance(p, Progress) for p in updates)
    assert isinstance(result, Composition)


@pytest.mark.parametrize(
    ("shape", "axes", "lead", "height", "width"),
    [
        ((20, 33), None, (), 20, 33),
        ((2, 20, 33), "ZYX", (2,), 20, 33),
        ((20, 33, 3), None, (), 20, 33),
        ((33, 2, 20), "XZY", (2,), 20, 33),
        ((2, 3, 17, 8), "TZYX", (2, 3), 17, 8),
    ],
)
def test_analyze_probabilities_and_maps(tiny_restorer, shape, axes, lead, height, width) -> None:
    image = random_image(shape, np.uint8)
    composition = tiny_restorer.analyze(image, axes=axes)
    assert list(composition.probabilities) == list(DEGRADATIONS)
    assert all(0.0 <= p <= 1.0 for p in composition.probabilities.values())
    cells = (-(-height // 8), -(-width // 8))
    assert composition.maps.shape == (len(DEGRADATIONS), *lead, *cells)
    assert composition.maps.dtype == np.float32
    assert ((composition.maps >= 0) & (composition.maps <= 1)).all()
    assert composition.map_scale == (8.0, 8.0)
    # the overall probability is the sigmoid of the mean per-region logit
    maps = composition.maps.reshape(len(DEGRADATIONS), -1).astype(np.float64)
    mean_logit = np.log(maps / (1 - maps)).mean(axis=1)
    expected = 1 / (1 + np.exp(-mean_logit))
    np.testing.assert_allclose(list(composition.probabilities.values()), expected, atol=1e-4)


def test_analyze_takes_confident_logits_without_overflow(tiny_restorer, monkeypatch) -> None:
    """Logits far from zero (a very sure head) give probabilities of 0 and 1, not warnings."""

    def sure(x: torch.Tensor) -> torch.Tensor:
        cells = (-(-x.shape[-2] // 8), -(-x.shape[-1] // 8))
        logits = torch.full((x.shape[0], len(DEGRADATIONS), *cells), -200.0)
        logits[:, 0] = 200.0
        return logits

    monkeypatch.setattr(tiny_restorer.net, "analyze", sure)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        composition = tiny_restorer.analyze(random_image((40, 40), np.uint8), flips=False)
    assert composition.probabilities[DEGRADATIONS[0]] == 1.0
    assert all(composition.probabilities[name] == 0.0 for name in DEGRADATIONS[1:])
    assert set(np.unique(composition.maps)) == {0.0, 1.0}


def test_analyze_tiled_matches_whole(tiny_restorer) -> None:
    image = random_image((70, 90), np.uint8)
    whole = tiny_restorer.analyze(image, tile=0)
    tiled = tiny_restorer.analyze(image, tile=16)
    np.testing.assert_allclose(tiled.maps, whole.maps, atol=1e-4)


@pytest.mark.parametrize(
    ("dtype", "unit", "offset", "axes"),
    [(np.uint8, 1.0, 60.0, "YX"), (np.uint16, 40.0, 500.0, "ZYXC"), (np.float32, 1 / 255, 0, "YX")],
)
def test_analyze_reads_the_noise_level_in_the_image_units(
    tiny_restorer, dtype, unit, offset, axes
) -> None:
    y, x = np.mgrid[:200, :240]
    clean = 60.0 + 0.3 * x + 0.2 * y  # smooth, well inside the 8-bit range
    noisy = clean + np.random.default_rng(0).normal(0, 12, clean.shape)
    image = (offset + unit * (noisy - 60)).astype(dtype)
    if axes == "ZYXC":
        image = np.stack([image] * 3, axis=-1)[None].repeat(2, axis=0)
    level = tiny_restorer.analyze(image, axes=axes, flips=False).noise_level
    assert level == pytest.approx(12 * unit, rel=0.1)


def test_a_single_row_has_no_noise_level(tiny_restorer) -> None:
    assert tiny_restorer.analyze(random_image((1, 40), np.uint8)).noise_level is None


def test_the_noise_level_reads_past_nan_pixels(tiny_restorer) -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 5.0, (300, 300)).astype(np.float32)
    image[rng.random(image.shape) < 0.1] = np.nan
    image[:, :150] = np.nan  # a mosaic's empty half: its windows do not count
    assert tiny_restorer.analyze(image, flips=False).noise_level == pytest.approx(5.0, rel=0.1)
    empty = np.full((64, 64), np.nan, np.float32)
    assert tiny_restorer.analyze(empty, flips=False).noise_level is None


def test_composition_dominant() -> None:
    probabilities = dict.fromkeys(DEGRADATIONS, 0.1)
    composition = Composition(dict(probabilities, blur=0.7, rain=0.6), np.zeros(0), (8.0, 8.0))
    assert composition.dominant() == "blur"
    assert composition.dominant(threshold=0.7) == "blur"
    assert composition.dominant(threshold=0.71) is None
    assert Composition(probabilities, np.zeros(0), (8.0, 8.0)).dominant() is None


@pytest.mark.parametrize(
    ("shape", "maps"),
    [
        ((1, 1), (1, 1)),
        ((1, 9), (1, 2)),
        ((9, 1), (2, 1)),
        ((1, 1, 3), (1, 1)),  # one RGB pixel
        ((2, 1, 1), (2, 1, 1)),  # a stack of two one-pixel planes
    ],
)
def test_one_pixel_images_work(tiny_restorer, shape, maps) -> None:
    image = random_image(shape, np.uint8)
    out = tiny_restorer.restore(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert tiny_restorer.analyze(image).maps.shape == (len(DEGRADATIONS), *maps)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 0), (3, 0, 5), (4, 6, 0)])
def test_empty_planes_are_refused(tiny_restorer, shape) -> None:
    image = np.zeros(shape, dtype=np.uint8)
    with pytest.raises(InputError, match="empty"):
        tiny_restorer.restore(image)
    with pytest.raises(InputError, match="empty"):
        tiny_restorer.analyze(image)


def test_an_empty_stack_of_planes_gives_an_empty_result(tiny_restorer) -> None:
    image = np.zeros((0, 8, 8), dtype=np.uint16)
    out = tiny_restorer.restore(image, axes="ZYX")
    assert out.shape == (0, 8, 8) and out.dtype == np.uint16


def test_tile_zero_is_one_pass(tiny_restorer) -> None:
    image = random_image((40, 52), np.uint8)
    calls = []
    whole = tiny_restorer.restore(image, tile=0, progress=lambda d, t: calls.append(t))
    assert calls == [1]
    np.testing.assert_array_equal(whole, tiny_restorer.restore(image))  # auto: 512 px tiles


@pytest.mark.parametrize(("tile", "overlap"), [(-1, 32), (64, -1), (-64, -8)])
def test_negative_tile_or_overlap_is_refused(tiny_restorer, tile, overlap) -> None:
    image = random_image((16, 16), np.uint8)
    with pytest.raises(InputError, match="tile|overlap"):
        tiny_restorer.restore(image, tile=tile, overlap=overlap)
    if tile < 0:
        with pytest.raises(InputError, match="tile"):
            tiny_restorer.analyze(image, tile=tile)


def test_bad_axes_are_refused(tiny_restorer) -> None:
    image = random_image((4, 16, 16), np.uint8)
    with pytest.raises(InputError, match="letters"):
        tiny_restorer.restore(image, axes="YX")
    with pytest.raises(InputError, match="not supported"):
        tiny_restorer.restore(np.zeros((2,) * 4 + (8, 8), np.uint8))


def test_out_receives_the_result(tiny_restorer) -> None:
    image = random_image((20, 24), np.uint16)
    out = np.zeros_like(image)
    result = tiny_restorer.restore(image, out=out)
    assert result is out
    np.testing.assert_array_equal(out, tiny_restorer.restore(image))
    with pytest.raises(InputError, match="shape"):
        tiny_restorer.restore(image, out=np.zeros((20, 25), np.uint16))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_restorer_refuses_a_missing_device() -> None:
    with pytest.raises(InputError, match="CUDA"):
        Restorer.from_pretrained("tiny", device="cuda")


def test_restorer_refuses_an_unknown_precision() -> None:
    with pytest.raises(InputError, match="precision"):
        Restorer.from_pretrained("tiny", device="cpu", precision="fp8")


def test_restorer_on_cpu_runs_in_bf16_where_native(tiny_restorer) -> None:
    assert tiny_restorer.device == torch.device("cpu")
    native = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert tiny_restorer.autocast_dtype == native
    assert Restorer.from_pretrained("tiny", device="cpu", precision="fp32").autocast_dtype == (
        torch.float32
    )
    assert not tiny_restorer.net.training


def test_cpu_bf16_restores_as_float32_does() -> None:
    image = np.random.default_rng(3).integers(0, 256, (96, 80, 3), dtype=np.uint8)
    fp32, bf16 = (
        Restorer.from_pretrained("tiny", device="cpu", precision=p).restore(image)
        for p in ("fp32", "bf16")
    )
    assert bf16.dtype == np.uint8
    assert peak_signal_noise_ratio(fp32, bf16) > 40


def test_analyze_sees_the_exposure_of_colour_photos_only(tiny_restorer) -> None:
    rng = np.random.default_rng(6)
    photo = rng.integers(0, 60, (48, 48, 3), dtype=np.uint8)
    grey = photo[..., 0]

    def probabilities(image, scaling):
        return tiny_restorer.analyze(image, scaling=scaling).probabilities

    assert probabilities(photo, "auto") == probabilities(photo, "range")
    assert probabilities(photo, "auto") != probabilities(photo, "percentile")
    assert probabilities(grey, "auto") == probabilities(grey, "percentile")
