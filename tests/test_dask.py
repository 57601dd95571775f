"""Dask arrays: lazy restoration block by block, and eager restoration of a dask input."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Restorer


@pytest.fixture(scope="module")
def tiny() -> Restorer:
    return Restorer.from_pretrained("tiny", device="cpu")


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 4000, (3, 64, 72), dtype=np.uint16)


@pytest.fixture(scope="module")
def eager(tiny, stack) -> np.ndarray:
    return tiny.restore(stack, tile=32, overlap=16)


def test_restore_dask_is_lazy_and_equals_restore(tiny, stack, eager, monkeypatch):
    calls = []
    forward = tiny.tile_pass
    monkeypatch.setattr(tiny, "tile_pass", lambda x: calls.append(1) or forward(x))
    lazy = tiny.restore_dask(da.from_array(stack, chunks=(1, 32, 36)), tile=32, overlap=16)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == stack.shape and lazy.dtype == stack.dtype
    assert lazy.chunks == ((1, 1, 1), (64,), (72,))
    assert not calls
    np.testing.assert_array_equal(lazy[1].compute(), eager[1])
    one_plane = len(calls)
    np.testing.assert_array_equal(lazy.compute(), eager)
    assert len(calls) == 4 * one_plane


def test_restore_accepts_a_dask_array(tiny, stack, eager):
    chunked = da.from_array(stack, chunks=(2, 16, 72))
    np.testing.assert_array_equal(tiny.restore(chunked, tile=32, overlap=16), eager)


def test_restore_dask_colour_chunks(tiny):
    image = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    lazy = tiny.restore_dask(da.from_array(image, chunks=(20, 24, 1)), axes="YXC", tile=0)
    np.testing.assert_array_equal(lazy.compute(), tiny.restore(image, axes="YXC", tile=0))


def test_restore_dask_float_output(tiny, stack):
    options = RestoreOptions(tile=32, overlap=16, float_output=True)
    lazy = tiny.restore_dask(da.from_array(stack, chunks=(1, 32, 36)), options=options)
    assert lazy.dtype == np.float32
    np.testing.assert_array_equal(lazy.compute(), tiny.restore(stack, options=options))
