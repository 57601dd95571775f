"""Intensity scaling: uint8 colour / 255, robust percentiles otherwise, exact inverses."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from allinone.errors import InputError
from allinone.infer import normalize
from allinone.infer.normalize import Normalization, check_dtype, fit_normalization
from allinone.tone_curve import ToneCurve

EPS32 = float(np.finfo(np.float32).eps)


def test_uint8_range_is_divided_by_255_with_an_exact_inverse() -> None:
    values = np.arange(256 * 3, dtype=np.uint16).reshape(16, 16, 3).astype(np.uint8)
    norm = fit_normalization(values, "range")
    assert (norm.offset, norm.scale, norm.dtype) == (0.0, 255.0, np.uint8)
    forward = norm.forward(values)
    assert forward.dtype == np.float32
    np.testing.assert_array_equal(forward, (values / 255.0).astype(np.float32))
    back = norm.inverse(forward)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, values)
    # out-of-range network outputs are clipped, never wrapped
    np.testing.assert_array_equal(norm.inverse(np.array([-0.5, 1.5, 0.5])), [0, 255, 128])


def test_auto_keeps_the_exposure_of_a_dim_grey_image() -> None:
    rng = np.random.default_rng(0)
    dim = rng.poisson(6.0, size=(64, 64)).astype(np.uint8)  # a dark fluorescence-like plane
    auto = fit_normalization(dim)
    low, high = np.percentile(dim.astype(np.float64), [0.1, 99.9])
    assert (auto.offset, auto.scale) == (pytest.approx(low), pytest.approx(high - low))
    assert fit_normalization(dim, "percentile") == auto
    assert auto.keep_exposure
    assert fit_normalization(dim, "range") == Normalization(0.0, 255.0, np.dtype(np.uint8))
    colour = np.repeat(dim[:, :, None], 3, axis=2)
    stretched = fit_normalization(colour)  # colour photos keep their exposure too
    assert (stretched.offset, stretched.scale) == (auto.offset, pytest.approx(auto.scale, rel=0.02))


@pytest.mark.parametrize(
    ("dtype", "offset", "scale"),
    [(np.uint16, 0.0, 65535.0), (np.int16, -32768.0, 65535.0), (np.float32, 0.0, 1.0)],
)
def test_range_scaling_uses_the_dtype_range(dtype, offset, scale) -> None:
    values = np.full((8, 8), 100, dtype=dtype)
    norm = fit_normalization(values, "range")
    assert (norm.offset, norm.scale) == (offset, scale)
    np.testing.assert_array_equal(norm.inverse(norm.forward(values)), values)


def test_an_unknown_scaling_is_refused_with_the_choices() -> None:
    with pytest.raises(InputError, match="percentile"):
        fit_normalization(np.zeros((4, 4), np.uint8), "minmax")


def full_range(dtype) -> np.ndarray:
    """Random values over the dtype's whole range, extremes included."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(0)
    values = rng.integers(info.min, info.max, size=4000, endpoint=True, dtype=dtype)
    values[:2] = info.min, info.max
    return values.reshape(40, 100)


@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.int16])
def test_small_integers_round_trip_exactly_over_their_whole_range(dtype) -> None:
    values = full_range(dtype)
    norm = fit_normalization(values)
    low, high = np.percentile(values.astype(np.float64), [0.1, 99.9])
    assert norm.offset == pytest.approx(low)
    assert norm.scale == pytest.approx(high - low)
    back = norm.inverse(norm.forward(values))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.int64, np.uint32])
def test_integers_round_trip_exactly(dtype) -> None:
    # a microscopy-like image: background, a bright spot outside the percentile range
    rng = np.random.default_rng(1)
    values = rng.normal(1000, 200, size=(60, 70)).clip(0).astype(dtype)
    values[5, 5] = 60000
    norm = fit_normalization(values)
    forward = norm.forward(values)
    assert forward.max() > 1.5  # the outlier is outside [0, 1] and kept, not clipped
    np.testing.assert_array_equal(norm.inverse(forward), values)


def test_large_int64_offsets_round_trip_exactly() -> None:
    values = np.arange(-3000, 3000, dtype=np.int64).reshape(60, 100) + 10**12
    norm = fit_normalization(values)
    np.testing.assert_array_equal(norm.inverse(norm.forward(values)), values)


@pytest.mark.parametrize(
    ("dtype", "scale"), [(np.float32, 1.0), (np.float32, 1e5), (np.float64, 1e-3), (np.float16, 10)]
)
def test_floats_round_trip_within_float_precision(dtype, scale) -> None:
    rng = np.random.default_rng(2)
    values = (rng.normal(0.3, 1.0, size=(50, 60)) * scale).astype(dtype)
    norm = fit_normalization(values)
    assert norm.dtype == dtype
    back = norm.inverse(norm.forward(values))
    assert back.dtype == dtype
    wide = values.astype(np.float64)
    tolerance = 4 * EPS32 * (np.abs(wide) + abs(norm.offset) + norm.scale)
    if dtype == np.float16:
        tolerance = np.maximum(tolerance, np.abs(wide) * np.finfo(np.float16).eps)
    assert np.all(np.abs(back.astype(np.float64) - wide) <= tolerance)


def test_float16_inverse_saturates_instead_of_overflowing() -> None:
    norm = Normalization(0.0, 1000.0, np.dtype(np.float16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = norm.inverse(np.array([1e6, -1e6], dtype=np.float32))
    assert np.all(np.isfinite(back))
    assert back[0] == np.finfo(np.float16).max and back[1] == np.finfo(np.float16).min


def test_a_tone_curve_is_undone_on_the_way_in_only() -> None:
    curve = ToneCurve(0.25, 2.0)
    norm = Normalization(0.0, 255.0, np.dtype(np.uint8), keep_exposure=True, curve=curve)
    values = np.array([0, 16, 64], dtype=np.uint8)
    np.testing.assert_allclose(norm.forward(values), np.sqrt(values / 255 / 0.25), rtol=1e-6)
    np.testing.assert_array_equal(norm.inverse(np.array([0.5, 1.0])), [128, 255])
    assert norm.clip_bounds() == pytest.approx((0.0, 2.0))
    assert curve.stops(0.25) == pytest.approx(2.0)


def test_integer_inverse_clips_to_the_dtype_range() -> None:
    norm = Normalization(0.0, 1000.0, np.dtype(np.int16))
    np.testing.assert_array_equal(norm.inverse(np.array([1e3, -1e3, 0.0015])), [32767, -32768, 2])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int32, np.uint32, np.int64, np.uint64])
def test_integer_inverse_saturates_at_both_ends(dtype) -> None:
    """Far out-of-range outputs saturate; for 64-bit integers, whose maximum is not a float64,
    they must not wrap around to the minimum."""
    info = np.iinfo(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        high, low = Normalization(0.0, 1.0, np.dtype(dtype)).inverse(np.array([1e30, -1e30]))
    assert low == info.min
    assert high > info.max - 4096 and high > 0


@pytest.fixture
def no_clipped_noise(monkeypatch) -> None:
    """The pipeline's plumbing alone: without the allowance for noise clipped at an integer
    dtype's ends (tested in test_clipping), which uniformly random values across the whole
    range, read as heavily clipped noise, would set to work."""
    monkeypatch.setattr(Normalization, "clip_bounds", lambda self: None)


@pytest.mark.usefixtures("no_clipped_noise")
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64]
)
def test_identity_restore_round_trips(identity_restorer, dtype) -> None:
    """Through the whole pipeline (tiles, blending, grey → RGB → grey) an identity network gives
    back the input: exactly for integers, to float32 precision for floats."""
    rng = np.random.default_rng(3)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(info.min, -30000), min(info.max, 60000)
        values = rng.integers(low, high, size=(2, 37, 45), endpoint=True).astype(dtype)
    else:
        values = (rng.normal(5, 3, size=(2, 37, 45)) * 7).astype(dtype)
    out = identity_restorer.restore(values, axes="ZYX", tile=16, overlap=8)
    assert out.dtype == dtype and out.shape == values.shape
    if np.issubdtype(dtype, np.integer):
        np.testing.assert_array_equal(out, values)
    else:
        norm = fit_normalization(values)
        eps = max(EPS32, float(np.finfo(dtype).eps))
        tolerance = 8 * eps * (np.abs(values.astype(np.float64)) + norm.scale + abs(norm.offset))
        assert np.all(np.abs(out.astype(np.float64) - values) <= tolerance)


@pytest.mark.usefixtures("no_clipped_noise")
def test_identity_restore_of_rgb_uint8_is_exact(identity_restorer) -> None:
    values = np.random.default_rng(4).integers(0, 256, size=(21, 34, 3), dtype=np.uint8)
    np.testing.assert_array_equal(identity_restorer.restore(values, tile=16, overlap=8), values)


@pytest.mark.parametrize("dtype", [np.bool_, np.complex64, np.complex128])
def test_bool_and_complex_are_refused(dtype, tiny_restorer) -> None:
    with pytest.raises(InputError, match="boolean|complex"):
        check_dtype(dtype)
    with pytest.raises(InputError, match="boolean|complex"):
        fit_normalization(np.zeros((4, 4), dtype=dtype))
    with pytest.raises(InputError, match="boolean|complex"):
        tiny_restorer.restore(np.zeros((8, 8), dtype=dtype))


@pytest.mark.parametrize("dtype", ["U3", "O", "M8[s]", "V4"])
def test_other_non_numeric_dtypes_are_refused(dtype) -> None:
    with pytest.raises(InputError, match="cannot be restored"):
        check_dtype(np.dtype(dtype))


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(np.uint16, 0), (np.uint16, 500), (np.int16, -7), (np.float32, 0.0), (np.float64, -2.5e-9)],
)
def test_constant_images_do_not_divide_by_zero(dtype, value) -> None:
    values = np.full((20, 30), value, dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        norm = fit_normalization(values)
        forward = norm.forward(values)
    assert norm.scale > 0 and np.isfinite(norm.scale)
    assert np.all(np.isfinite(forward))
    np.testing.assert_array_equal(norm.inverse(forward), values)


def test_non_finite_values_are_ignored_by_the_fit() -> None:
    rng = np.random.default_rng(5)
    values = rng.uniform(10, 20, size=(30, 30))
    values[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
    reference = fit_normalization(np.delete(values.ravel(), range(5)))
    norm = fit_normalization(values)
    assert np.isfinite(norm.offset) and np.isfinite(norm.scale)
    assert norm.offset == pytest.approx(reference.offset)
    assert norm.scale == pytest.approx(reference.scale)
    forward = norm.forward(values)
    assert np.isnan(forward[0, 0]) and forward[0, 1] == np.inf and forward[0, 2] == -np.inf
    assert np.all(np.isfinite(forward[1:]))


@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_all_non_finite_image(fill) -> None:
    norm = fit_normalization(np.full((5, 5), fill, dtype=np.float32))
    assert (norm.offset, norm.scale) == (0.0, 1.0)


@pytest.mark.parametrize("shape", [(2, 200, 300), (200, 300, 3), (3, 2, 150, 150), (40, 90, 90)])
def test_the_sample_covers_every_channel(monkeypatch, shape) -> None:
    monkeypatch.setattr(normalize, "SAMPLE_SIZE", 5000)
    short = [n if n < normalize.MIN_SAMPLED else 1 for n in shape]
    labels = np.arange(np.prod(short), dtype=np.uint16).reshape(short)  # one value a channel
    sample = normalize._sample(np.broadcast_to(labels, shape))
    assert 1000 <= sample.size <= 5000
    np.testing.assert_array_equal(np.unique(sample), labels.ravel())


def test_channels_of_different_brightness_all_shape_the_fit(monkeypatch) -> None:
    """A big two-channel image: the dim first channel alone must not set the range."""
    monkeypatch.setattr(normalize, "SAMPLE_SIZE", 5000)
    image = np.empty((2, 200, 300), dtype=np.uint16)
    image[0], image[1] = 100, 10_000
    norm = fit_normalization(image)
    assert norm.offset == 100 and norm.scale == pytest.approx(9900)


def test_large_arrays_are_sampled(monkeypatch) -> None:
    monkeypatch.setattr(normalize, "SAMPLE_SIZE", 1000)
    ramp = np.add.outer(np.arange(300), np.arange(400)).astype(np.uint16)
    sample = normalize._sample(ramp)
    assert 500 <= sample.size <= 4000
    low, high = np.percentile(ramp, [0.1, 99.9])  # of every pixel
    norm = fit_normalization(ramp)
    assert norm.offset == pytest.approx(low, abs=10)
    assert norm.offset + norm.scale == pytest.approx(high, abs=10)
