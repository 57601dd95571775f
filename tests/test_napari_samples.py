"""Every sample opens in one call through the manifest: a degraded layer and its clean original."""

from __future__ import annotations

import numpy as np
import pytest

SAMPLES = [
    "noisy_stack",
    "noisy_fluorescence",
    "hazy_photo",
    "rainy_photo",
    "dark_photo",
    "mixed_photo",
]


@pytest.mark.parametrize("key", SAMPLES)
def test_sample_opens_a_degraded_and_clean_pair(make_napari_viewer, key: str) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-allinone", key)

    clean, degraded = viewer.layers
    assert clean.name == f"{degraded.name} (clean)" and not clean.visible
    assert degraded.data.shape == clean.data.shape
    assert degraded.data.dtype == clean.data.dtype
    assert not np.array_equal(degraded.data, clean.data)
    assert degraded.rgb == (key.endswith("photo"))
    if key == "dark_photo":
        assert degraded.data.mean() < 0.5 * clean.data.mean()
