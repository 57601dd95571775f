"""The microscopy baselines: blind filters see only the noisy plane, tuned ones never do worse."""

from __future__ import annotations

import numpy as np
import pytest

from allinone import microscopy_baselines as mb
from allinone.microscopy import Detector, acquire, draw_optics, image


@pytest.fixture(autouse=True)
def no_bm3d(monkeypatch: pytest.MonkeyPatch) -> None:
    """The NL-means fallback keeps these tests fast."""
    monkeypatch.setattr(mb, "bm3d_module", lambda: None)


def _pair() -> tuple[np.ndarray, np.ndarray]:
    """Widefield nuclei at 30 photons through a 12-bit camera with an offset."""
    rng = np.random.default_rng(0)
    density = image(rng, (64, 64), draw_optics(rng, "widefield"), ("nuclei",))
    detector = Detector(photons=30, gain=20, offset=100, read_noise=1, bits=12)
    return acquire(density, detector, seed=0)


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


@pytest.mark.parametrize("blind", [mb.tv_blind, mb.bm3d_blind])
def test_blind_filters_reduce_the_error_on_the_counts_scale(blind) -> None:
    noisy, clean = _pair()
    restored = blind(noisy)
    assert restored.shape == noisy.shape and restored.dtype == np.float32
    assert _mse(restored, clean) < 0.5 * _mse(noisy, clean)


@pytest.mark.parametrize(("blind", "tuned"), [(mb.tv_blind, mb.tv_tuned)])
def test_tuned_filters_are_at_least_as_close_to_the_truth(blind, tuned) -> None:
    noisy, clean = _pair()
    assert _mse(tuned(noisy, clean), clean) <= _mse(blind(noisy), clean)


def test_the_noise_is_read_from_the_plane() -> None:
    rng = np.random.default_rng(0)
    flat = 0.5 + rng.normal(0, 0.05, (64, 64))
    assert mb.noise_sigma(flat) == pytest.approx(0.05, rel=0.15)
    assert mb.bm3d_name().startswith("NL-means")
