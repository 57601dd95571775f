"""`scaling="auto"`: an 8-bit colour photo's under-exposure is undone, anything else kept."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from allinone import Restorer
from allinone.errors import AllInOneWarning
from allinone.infer.auto_exposure import (
    choose_normalization,
    describe,
    photo_overview,
    probe_windows,
)
from allinone.infer.axes import PlaneLayout
from allinone.infer.options import RestoreOptions
from allinone.tone_curve import ToneCurve
from allinone.train.finetune import _samples

DARKENED = ToneCurve(0.25, 1.0)
"""A curve that brightens everything by two stops."""
UNCHANGED = ToneCurve(1.0, 1.0)


def photo(height: int = 96, width: int = 80, level: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(level - 20, level + 20, (height, width, 3)).astype(np.uint8)


def estimator(dark_below: float = 60 / 255):
    """A stand-in estimator: `DARKENED` for an overview darker than `dark_below` on average,
    else `UNCHANGED`; it records the overviews it was shown."""
    seen: list[np.ndarray] = []

    def estimate(view: np.ndarray) -> ToneCurve:
        seen.append(view)
        return DARKENED if view.mean() < dark_below else UNCHANGED

    estimate.seen = seen
    return estimate


def test_the_windows_cover_the_plane_evenly() -> None:
    windows = probe_windows((1000, 600), window=128, grid=3)
    assert len(windows) == 9
    assert {(w[0].start, w[1].start) for w in windows} == {
        (y, x) for y in (0, 436, 872) for x in (0, 236, 472)
    }
    assert all(w[0].stop - w[0].start == 128 and w[1].stop - w[1].start == 128 for w in windows)


def test_a_small_plane_is_read_whole() -> None:
    assert probe_windows((40, 100), window=128, grid=3) == [(slice(0, 40), slice(0, 100))]


def test_the_overview_holds_block_means_of_the_whole_plane() -> None:
    image = photo(height=1000, width=300)
    view = photo_overview(image, PlaneLayout.of(image.shape, "YXC"))
    assert view.shape == (63, 19, 3)  # blocks of 16, partial ones at the edges
    np.testing.assert_allclose(view[0, 0], image[:16, :16].mean(axis=(0, 1)) / 255, rtol=1e-5)
    np.testing.assert_allclose(view[-1, -1], image[992:, 288:].mean(axis=(0, 1)) / 255, rtol=1e-5)


def test_keep_exposure_and_non_photos_never_ask_the_estimator() -> None:
    estimate = estimator()
    dark = photo(level=30)
    layout = PlaneLayout.of(dark.shape, "YXC")
    assert choose_normalization(dark, layout, "percentile", estimate).keep_exposure
    sixteen = dark.astype(np.uint16)
    assert choose_normalization(sixteen, layout, "auto", estimate).curve is None
    assert choose_normalization(sixteen, layout, "range", estimate).scale == 65535
    grey = dark[..., 0]
    assert (
        choose_normalization(grey, PlaneLayout.of(grey.shape, "YX"), "auto", estimate).curve is None
    )
    assert estimate.seen == []


def test_an_under_exposed_photo_is_undone_with_a_warning() -> None:
    dark = photo(level=30)
    with pytest.warns(AllInOneWarning, match="under-exposed \\(by 2.0 stops"):
        norm = choose_normalization(dark, PlaneLayout.of(dark.shape, "YXC"), "auto", estimator())
    assert norm.curve == DARKENED and norm.keep_exposure
    np.testing.assert_allclose(norm.forward(dark), dark / 255 * 4, rtol=1e-5)
    assert norm.inverse(np.float32([0.5])) == 128  # linear back: the result stays brightened


def test_a_well_exposed_photo_keeps_its_exposure(recwarn) -> None:
    bright = photo(level=120)
    norm = choose_normalization(bright, PlaneLayout.of(bright.shape, "YXC"), "auto", estimator())
    assert norm.curve is None and norm.keep_exposure
    assert not [w for w in recwarn if issubclass(w.category, AllInOneWarning)]


def test_a_slight_brightening_is_not_a_correction(recwarn) -> None:
    bright = photo(level=120)
    slight = lambda view: ToneCurve(0.8, 1.0)  # noqa: E731  (0.32 stops)
    norm = choose_normalization(bright, PlaneLayout.of(bright.shape, "YXC"), "auto", slight)
    assert norm.curve is None
    assert not [w for w in recwarn if issubclass(w.category, AllInOneWarning)]


def test_correcting_the_exposure_undoes_a_noticeable_curve_without_asking(recwarn) -> None:
    layout = PlaneLayout.of(photo().shape, "YXC")
    slight = ToneCurve(0.8, 1.0)  # 0.32 stops: not enough for auto
    norm = choose_normalization(photo(level=120), layout, "range", lambda view: slight)
    assert norm.curve == slight and not norm.keep_exposure  # the network may brighten further
    assert (norm.offset, norm.scale) == (0.0, 255.0)
    assert not [w for w in recwarn if issubclass(w.category, AllInOneWarning)]
    scatter = ToneCurve(0.95, 1.0)  # 0.07 stops
    norm = choose_normalization(photo(level=120), layout, "range", lambda view: scatter)
    assert norm.curve is None and (norm.offset, norm.scale) == (0.0, 255.0)


def test_a_stack_is_judged_on_its_middle_plane_in_colour_only() -> None:
    stack = np.stack([photo(level=120), photo(level=30), photo(level=120)])
    rgba = np.concatenate([stack, np.full((*stack.shape[:3], 1), 255, np.uint8)], axis=-1)
    estimate = estimator()
    with pytest.warns(AllInOneWarning):
        norm = choose_normalization(rgba, PlaneLayout.of(rgba.shape, "ZYXC"), "auto", estimate)
    assert norm.curve == DARKENED
    (view,) = estimate.seen  # the middle plane's overview, alpha dropped
    assert view.shape == (48, 40, 3) and view.mean() == pytest.approx(30 / 255, rel=0.05)


def test_restore_undoes_the_estimated_darkening(tiny_restorer, monkeypatch) -> None:
    dark = photo(level=30)
    monkeypatch.setattr(Restorer, "exposure_curve", lambda self, view: DARKENED)
    with pytest.warns(AllInOneWarning):
        corrected = tiny_restorer.restore(dark)
    assert 3.5 < corrected.mean() / dark.mean() < 4.5
    monkeypatch.setattr(Restorer, "exposure_curve", lambda self, view: UNCHANGED)
    kept = tiny_restorer.restore(dark)
    np.testing.assert_array_equal(kept, tiny_restorer.restore(dark, scaling="percentile"))


def test_finetuning_undoes_the_darkening_of_the_degraded_image_only() -> None:
    dark, clean = photo(level=30), photo(level=120)
    rng = np.random.default_rng(0)
    with pytest.warns(AllInOneWarning):
        (corrected,) = _samples(
            [(dark, clean)], "YXC", None, 0.2, RestoreOptions(), lambda view: DARKENED, rng
        )
    degraded, target = (np.asarray(part) for part in corrected.train)
    assert degraded.mean() == pytest.approx(4 * 30 / 255, rel=0.02)
    assert target.mean() == pytest.approx(120 / 255, rel=0.02)
    (kept,) = _samples(
        [(dark, clean)], "YXC", None, 0.2, RestoreOptions(), lambda view: UNCHANGED, rng
    )
    assert kept.chain.norm.keep_exposure and corrected.chain.norm.keep_exposure


def test_analyze_reports_the_under_exposure_of_photos_only(tiny_restorer, monkeypatch) -> None:
    monkeypatch.setattr(Restorer, "exposure_curve", lambda self, view: DARKENED)
    dark = photo(level=30)
    stops = tiny_restorer.analyze(dark, flips=False).under_exposure
    assert stops == pytest.approx(2.0)
    assert describe(stops) == "2.0 stops under: auto restore corrects it"
    assert describe(0.3).startswith("kept (reads 0.3 stops under")
    assert tiny_restorer.analyze(dark[..., 0], flips=False).under_exposure is None
    assert tiny_restorer.analyze(dark.astype(np.uint16), flips=False).under_exposure is None


@pytest.fixture(scope="module")
def shipped() -> Restorer:
    return Restorer.from_pretrained("default", device="cpu")


def test_the_shipped_estimator_tells_an_under_exposed_photo_from_a_dark_or_noisy_one(
    shipped,
) -> None:
    clean = data.astronaut()
    layout = PlaneLayout.of(clean.shape, "YXC")
    rng = np.random.default_rng(0)
    under = np.clip(255 * (clean / 255) ** 2.5 * 0.375 + rng.normal(0, 2, clean.shape), 0, 255)
    three_stops = 255 * (clean / 255) * 2 ** (-3 / 2.2)
    noisy = np.clip(clean + rng.normal(0, 50, clean.shape), 0, 255)

    def curve(image: np.ndarray) -> ToneCurve | None:
        return choose_normalization(image, layout, "auto", shipped.exposure_curve).curve

    with pytest.warns(AllInOneWarning):
        assert curve(np.rint(under).astype(np.uint8)) is not None
    with pytest.warns(AllInOneWarning):
        assert curve(np.rint(three_stops).astype(np.uint8)) is not None
    assert curve(clean) is None
    assert curve(np.rint(noisy).astype(np.uint8)) is None
