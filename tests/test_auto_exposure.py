"""`scaling="auto"`: the exposure is corrected only for 8-bit colour photos that read dark."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from allinone import Restorer
from allinone.errors import AllInOneWarning
from allinone.infer.auto_exposure import (
    choose_scaling,
    probe_windows,
    reads_under_exposed,
)
from allinone.infer.axes import PlaneLayout
from allinone.train.finetune import _samples


def photo(height: int = 96, width: int = 80, level: int = 120, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(level - 20, level + 20, (height, width, 3)).astype(np.uint8)


def reader(dark_below: float = 60.0):
    """A stand-in head: low-light logit +5 for a window darker than `dark_below` on average,
    else -5; it records the windows it was shown."""
    seen: list[np.ndarray] = []

    def read(window: np.ndarray) -> float:
        seen.append(window)
        return 5.0 if window.mean() < dark_below else -5.0

    read.seen = seen
    return read


def test_the_windows_cover_the_plane_evenly() -> None:
    windows = probe_windows((1000, 600), window=128, grid=3)
    assert len(windows) == 9
    assert {(w[0].start, w[1].start) for w in windows} == {
        (y, x) for y in (0, 436, 872) for x in (0, 236, 472)
    }
    assert all(w[0].stop - w[0].start == 128 and w[1].stop - w[1].start == 128 for w in windows)


def test_a_small_plane_is_read_whole() -> None:
    assert probe_windows((40, 100), window=128, grid=3) == [(slice(0, 40), slice(0, 100))]


@pytest.mark.parametrize(
    ("logits", "expected"),
    [
        ([4.0] * 9, True),
        ([4.0] * 8 + [-1.0], True),  # 8 of 9 agree, overall still sure
        ([4.0] * 7 + [-1.0] * 2, False),  # a quarter disagree: sparse dark-by-nature scene
        ([1.5] * 9, False),  # all agree, but p = 0.82 < 0.9
    ],
)
def test_under_exposure_needs_a_sure_and_consistent_reading(logits, expected) -> None:
    assert reads_under_exposed(np.array(logits)) is expected


def test_explicit_scalings_and_non_photos_never_ask_the_network() -> None:
    read = reader()
    dark = photo(level=30)
    layout = PlaneLayout.of(dark.shape, "YXC")
    assert choose_scaling(dark, layout, "range", read) == "range"
    assert choose_scaling(dark, layout, "percentile", read) == "percentile"
    sixteen = dark.astype(np.uint16)
    assert choose_scaling(sixteen, layout, "auto", read) == "percentile"
    grey = dark[..., 0]
    assert choose_scaling(grey, PlaneLayout.of(grey.shape, "YX"), "auto", read) == "percentile"
    assert read.seen == []


def test_an_under_exposed_photo_is_corrected_with_a_warning() -> None:
    dark = photo(level=30)
    with pytest.warns(AllInOneWarning, match="under-exposed"):
        assert choose_scaling(dark, PlaneLayout.of(dark.shape, "YXC"), "auto", reader()) == "range"


def test_a_well_exposed_photo_keeps_its_exposure(recwarn) -> None:
    bright = photo(level=120)
    layout = PlaneLayout.of(bright.shape, "YXC")
    assert choose_scaling(bright, layout, "auto", reader()) == "percentile"
    assert not [w for w in recwarn if issubclass(w.category, AllInOneWarning)]


def test_a_stack_is_judged_on_its_middle_plane_in_colour_only() -> None:
    stack = np.stack([photo(level=120), photo(level=30), photo(level=120)])
    rgba = np.concatenate([stack, np.full((*stack.shape[:3], 1), 255, np.uint8)], axis=-1)
    read = reader()
    with pytest.warns(AllInOneWarning):
        assert choose_scaling(rgba, PlaneLayout.of(rgba.shape, "ZYXC"), "auto", read) == "range"
    assert all(window.shape[-1] == 3 and window.mean() < 60 for window in read.seen)


def test_restore_uses_the_chosen_scaling(tiny_restorer, monkeypatch) -> None:
    dark = photo(level=30)
    monkeypatch.setattr(Restorer, "low_light_logit", lambda self, window: 5.0)
    with pytest.warns(AllInOneWarning):
        corrected = tiny_restorer.restore(dark)
    np.testing.assert_array_equal(corrected, tiny_restorer.restore(dark, scaling="range"))
    monkeypatch.setattr(Restorer, "low_light_logit", lambda self, window: -5.0)
    kept = tiny_restorer.restore(dark)
    np.testing.assert_array_equal(kept, tiny_restorer.restore(dark, scaling="percentile"))
    assert not np.array_equal(corrected, kept)


def test_finetuning_scales_pairs_as_restore_does() -> None:
    dark, clean = photo(level=30), photo(level=120)
    pairs = [(dark, clean)]
    with pytest.warns(AllInOneWarning):
        corrected = _samples(pairs, "YXC", None, 0.2, "auto", lambda window: 5.0)
    kept = _samples(pairs, "YXC", None, 0.2, "auto", lambda window: -5.0)
    assert not corrected[0].keep_exposure and kept[0].keep_exposure


@pytest.fixture(scope="module")
def shipped() -> Restorer:
    return Restorer.from_pretrained("default", device="cpu")


def test_the_shipped_model_tells_an_under_exposed_photo_from_a_dark_or_noisy_one(shipped) -> None:
    clean = data.astronaut()
    layout = PlaneLayout.of(clean.shape, "YXC")
    rng = np.random.default_rng(0)
    under = np.clip(255 * (clean / 255) ** 2.5 * 0.375 + rng.normal(0, 2, clean.shape), 0, 255)
    noisy = np.clip(clean + rng.normal(0, 50, clean.shape), 0, 255)
    choose = lambda image: choose_scaling(image, layout, "auto", shipped.low_light_logit)  # noqa: E731
    with pytest.warns(AllInOneWarning):
        assert choose(np.rint(under).astype(np.uint8)) == "range"
    assert choose(clean) == "percentile"
    assert choose(np.rint(noisy).astype(np.uint8)) == "percentile"
    assert choose(data.hubble_deep_field()) == "percentile"
