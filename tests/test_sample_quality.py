"""The microscopy samples are honest pairs, and the shipped model restores them better than a
total-variation filter at its best weight."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.restoration import denoise_tv_chambolle

from napari_allinone import _samples

TV_WEIGHTS = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8)
MICROSCOPY = {"noisy_stack": "ZYX", "noisy_fluorescence": "YX"}


def _pair(key: str) -> tuple[np.ndarray, np.ndarray]:
    (clean, _, _), (noisy, _, _) = getattr(_samples, key)()
    return noisy, clean


def _psnr(clean: np.ndarray, image: np.ndarray) -> float:
    clean = clean.astype(np.float64)
    error = np.mean((image.astype(np.float64) - clean) ** 2)
    return float(10 * np.log10(np.ptp(clean) ** 2 / error))


def _best_tv(noisy: np.ndarray, clean: np.ndarray) -> float:
    low, high = np.percentile(noisy, [0.1, 99.9])
    scaled = (noisy.astype(np.float64) - low) / (high - low)
    return max(
        _psnr(clean, denoise_tv_chambolle(scaled, weight=w) * (high - low) + low)
        for w in TV_WEIGHTS
    )


@pytest.mark.parametrize("key", sorted(MICROSCOPY))
def test_clean_layer_is_on_the_noisy_layers_scale(key: str) -> None:
    noisy, clean = _pair(key)
    assert noisy.dtype == clean.dtype == np.uint16 and noisy.shape == clean.shape
    assert abs(noisy.mean() - clean.mean()) < 0.02 * np.ptp(clean)  # the same exposure
    residual = noisy.astype(np.float64) - clean
    assert abs(residual.mean()) < 0.2 * residual.std()  # zero-mean noise around the average


@pytest.mark.slow
@pytest.mark.parametrize(
    "key",
    [
        "noisy_fluorescence",
        pytest.param(
            "noisy_stack",
            marks=pytest.mark.xfail(
                strict=True,
                reason="measured 34.8 dB against 37.2 for TV at its best weight, which smooths "
                "across Z as well; the network restores plane by plane (issue 29)",
            ),
        ),
    ],
)
def test_the_default_model_beats_the_best_tv_weight(key: str) -> None:
    from allinone import Restorer

    noisy, clean = _pair(key)
    if noisy.ndim == 3:  # the middle planes of the stack keep the test short
        noisy, clean = noisy[9:15], clean[9:15]
    restored = Restorer.from_pretrained("default", device="cpu").restore(
        noisy, axes=MICROSCOPY[key]
    )
    assert restored.dtype == noisy.dtype
    assert _psnr(clean, restored) > _best_tv(noisy, clean)
