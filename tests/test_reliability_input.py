"""Reliability, bad input: a mistake gets a clear message (an `AllInOneError` in the API,
`error: ...` and exit status 2 in the CLI, a notification in the widgets), never a traceback or
a wrong result.

Covered elsewhere, not repeated here:
- unreadable files in the API: test_io::test_unreadable_files_raise_input_error; a missing input
  in the CLI: test_cli::test_missing_input_is_a_clear_error
- 1x1 and 0-size arrays: test_restorer::test_one_pixel_images_work,
  test_restorer::test_empty_planes_are_refused (napari itself refuses 0-size image layers)
- 5-D arrays: test_restorer::test_restore_keeps_shape_and_dtype (TCZYX); 6-D guessed:
  test_restorer::test_bad_axes_are_refused, test_axes::test_guess_axes_refuses_more_than_five_axes
- axes that do not match: test_axes::test_normalize_axes_errors,
  test_restorer::test_bad_axes_are_refused, test_napari_widgets::test_invalid_axes_disable_run
- NaN and Inf: test_restorer::test_non_finite_pixels_are_kept_and_the_rest_is_finite,
  test_restorer::test_analyze_ignores_non_finite_pixels, test_normalize::test_all_non_finite_image
- constant images: test_normalize::test_constant_images_do_not_divide_by_zero, and the constant
  examples of test_properties::test_restore_is_well_formed
- bool and complex: test_normalize::test_bool_and_complex_are_refused; int64 extremes:
  test_normalize::test_integer_inverse_saturates_at_both_ends; int64 and float16 over random
  shapes, axes and tiles: test_properties::test_restore_is_well_formed
- a clean image of another shape: test_finetune::test_bad_inputs,
  test_cli_finetune::test_shape_mismatch_is_a_clear_error,
  test_napari_widgets::test_finetune_rejects_layers_of_different_shapes
- regions outside the image or smaller than a patch, in the API: test_finetune::test_bad_inputs
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import open_widget

from allinone.cli import common, main
from allinone.errors import InputError
from allinone.infer.axes import normalize_axes
from allinone.io import read_image, write_image
from allinone.train.finetune import finetune
from napari_allinone._finetune import NO_CLEAN
from napari_allinone._workers import JobState

TINY = ["--model", "tiny", "--device", "cpu"]
TIMEOUT_MS = 60_000


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _assert_user_error(code: int, err: str, *words: str) -> None:
    """Exit status 2 and one `error: ...` line naming the problem, no traceback."""
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as loading a model."""

    def refuse(args):
        raise AssertionError("the model was loaded although the command should stop earlier")

    monkeypatch.setattr(common, "load_restorer", refuse)


# --- values: the API -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high"),
    [(-3e38, 3e38), (3.0e38, 3.4e38), (-1e6, -1e5)],
    ids=["float32-full-range", "near-float32-max", "negative"],
)
def test_extreme_float32_values_restore_finite(tiny_restorer, low: float, high: float) -> None:
    image = np.random.default_rng(0).uniform(low, high, (32, 32)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow on the way
        out = tiny_restorer.restore(image, tile=0)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.corrcoef(image.ravel(), out.ravel())[0, 1] > 0.9


def test_float64_values_too_far_apart_are_refused(tiny_restorer) -> None:
    image = np.random.default_rng(1).uniform(-1, 1, (16, 16)) * 1.7e308
    with pytest.raises(InputError, match="too wide a range"):
        tiny_restorer.restore(image)
    with pytest.raises(InputError, match="too wide a range"):
        tiny_restorer.analyze(image)


def test_far_outliers_pass_through_unchanged(tiny_restorer) -> None:
    image = np.random.default_rng(2).random((32, 32))
    image[0, :2] = 1.7e308, -1.7e308
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = tiny_restorer.restore(image, tile=0)
    np.testing.assert_array_equal(out[0, :2], image[0, :2])
    assert np.isfinite(out).all()


def test_six_axes_are_refused_by_name_even_when_given() -> None:
    with pytest.raises(InputError, match="6-D arrays are not supported"):
        normalize_axes("TCZYXQ", (2, 2, 2, 2, 8, 8))


def test_finetuning_on_pairs_with_nan_and_inf(tiny_restorer) -> None:
    rng = np.random.default_rng(3)
    clean = rng.random((48, 48), dtype=np.float32)
    degraded = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
    degraded[5, :8] = [np.nan, np.inf, -np.inf] * 2 + [np.nan] * 2
    clean[40, :3] = np.nan
    result = finetune(
        tiny_restorer, [(degraded, clean)], steps=2, patch_size=16, batch_size=2, val_fraction=0.25
    )
    assert np.isfinite(result.psnr_before) and np.isfinite(result.psnr_after)
    assert all(np.isfinite(entry.get("loss", 0.0)) for entry in result.history)


# --- files and arrays: the CLI -------------------------------------------------------------------


def _truncated_tiff(folder: Path) -> Path:
    whole = write_image(folder / "whole.tif", np.ones((4, 32, 32), np.uint16), axes="ZYX")
    path = folder / "cut.tif"
    path.write_bytes(whole.read_bytes()[:600])
    return path


def _zero_pixel_tiff(folder: Path) -> Path:
    path = folder / "nothing.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tifffile warns that a 0-size TIFF is unusual
        tifffile.imwrite(path, np.zeros((0, 8), np.uint8))
    return path


def _file(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder / name


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: _file(d, "empty.png", b""), "empty"),
        (lambda d: _truncated_tiff(d), "damaged or truncated"),
        (lambda d: _file(d, "notes.tif", b"dear diary, this is no image"), "not a TIFF"),
        (lambda d: _zero_pixel_tiff(d), "no pixels"),
        (lambda d: (d / "folder.tif").mkdir() or d / "folder.tif", "folder"),
    ],
    ids=["empty", "truncated", "not-an-image", "no-pixels", "folder"],
)
def test_cli_unreadable_inputs(tmp_path: Path, capsys, no_model, make, problem: str) -> None:
    source = make(tmp_path)
    before = sorted(tmp_path.iterdir())
    code, out, err = _run(capsys, "restore", source, "-o", tmp_path / "out.tif", *TINY)
    _assert_user_error(code, err, "Cannot read", str(source), problem)
    assert out == "" and sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("array", "extra", "problem"),
    [
        (np.zeros((8, 8), bool), [], "boolean"),
        (np.zeros((8, 8), np.complex64), [], "complex"),
        (np.zeros((2, 2, 2, 2, 8, 8), np.uint8), [], "6-D arrays are not supported"),
        (np.zeros((8, 8), np.uint8), ["--axes", "ZYX"], "'ZYX' have 3 letters"),
        (np.zeros((3, 8, 8), np.uint8), ["--axes", "YXQ"], "unknown axis letter"),
    ],
    ids=["bool", "complex", "6-D", "axes-too-long", "axes-unknown-letter"],
)
def test_cli_refuses_unusable_arrays(tmp_path: Path, capsys, array, extra, problem) -> None:
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, array)
    code, _, err = _run(capsys, "restore", source, "-o", tmp_path / "out.tif", *TINY, *extra)
    _assert_user_error(code, err, problem)
    assert not (tmp_path / "out.tif").exists()


def test_cli_restores_one_pixel_and_five_axes(tmp_path: Path, capsys) -> None:
    pixel = write_image(tmp_path / "pixel.png", np.full((1, 1), 77, np.uint8))
    code, _, err = _run(capsys, "restore", pixel, "-o", tmp_path / "pixel-out.png", *TINY)
    assert code == 0, err
    assert read_image(tmp_path / "pixel-out.png").array.shape == (1, 1)

    stack = np.random.default_rng(4).integers(0, 4000, (2, 2, 2, 16, 16), dtype=np.uint16)
    source = write_image(tmp_path / "tczyx.tif", stack, axes="TCZYX")
    code, _, err = _run(capsys, "restore", source, "-o", tmp_path / "tczyx-out.tif", *TINY)
    assert code == 0, err
    result = read_image(tmp_path / "tczyx-out.tif")
    assert result.array.shape == stack.shape and result.axes == "TCZYX"


def test_cli_finetune_region_outside_the_image(tmp_path: Path, capsys) -> None:
    pair = np.random.default_rng(5).integers(0, 255, (2, 64, 64), dtype=np.uint8)
    degraded = write_image(tmp_path / "degraded.png", pair[0])
    clean = write_image(tmp_path / "clean.png", pair[1])
    argv = ["finetune", "--input", degraded, "--target", clean, "-o", tmp_path / "m"]
    code, _, err = _run(capsys, *argv, "--roi", "100:120,0:64", "--steps", "1", *TINY)
    _assert_user_error(code, err, "outside the 64x64 image")
    assert list(tmp_path.glob("m*")) == []


# --- layers: the widgets -------------------------------------------------------------------------


@pytest.fixture
def viewer(make_napari_viewer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ALLINONE_MODELS_DIR", str(tmp_path / "models"))
    return make_napari_viewer()


def _names(combo) -> list[str]:
    return [combo.itemText(i) for i in range(combo.count())]


def test_widgets_offer_image_layers_only(viewer) -> None:
    viewer.add_image(np.zeros((16, 16), np.uint8), name="image")
    viewer.add_labels(np.zeros((16, 16), np.int32), name="labels")
    viewer.add_points([[2, 2]], name="points")
    viewer.add_shapes([[[1, 1], [1, 8], [8, 8], [8, 1]]], name="shapes")
    restore = open_widget(viewer, "Restore")
    composition = open_widget(viewer, "Degradation composition")
    finetune = open_widget(viewer, "Fine-tune")
    for combo in (restore.layer, composition.layer, finetune.degraded):
        assert _names(combo) == ["image"]
    assert _names(finetune.clean) == [NO_CLEAN, "image"]
    assert _names(composition.shapes) == ["shapes"]
    assert _names(finetune.regions) == ["(whole image)", "shapes"]


def test_restore_widget_with_unusable_layers(viewer, qtbot, notifications) -> None:
    viewer.add_image(np.zeros((2, 2, 2, 2, 16, 16), np.uint8), name="six-d")
    widget = open_widget(viewer, "Restore")
    assert not widget.run_button.isEnabled()
    assert "6-D arrays are not supported" in widget.axes_message.text()

    mask = viewer.add_image(np.zeros((16, 16), bool), name="mask")
    widget.layer.set_layer(mask)
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.job.state is JobState.FAILED, timeout=TIMEOUT_MS)
    assert notifications[-1][0] == "error" and "boolean images" in notifications[-1][1]

    pixel = viewer.add_image(np.full((1, 1), 9, np.uint8), name="pixel")
    widget.layer.set_layer(pixel)
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.job.state is JobState.DONE, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["six-d", "mask", "pixel", "pixel [restored]"]
    assert viewer.layers["pixel [restored]"].data.shape == (1, 1)


def _finetune_pair(viewer, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(6)
    viewer.add_image(rng.random(shape, dtype=np.float32), name="clean")
    viewer.add_image(rng.random(shape, dtype=np.float32), name="noisy")


def _start_finetune(viewer, regions=None):
    widget = open_widget(viewer, "Fine-tune")
    widget.degraded.set_layer(viewer.layers["noisy"])
    widget.clean.set_layer(viewer.layers["clean"])
    widget.regions.set_layer(regions)
    widget.budget.setValue(2)
    widget.start_button.click()
    return widget


def test_finetune_widget_refuses_bad_regions(viewer, qtbot, notifications) -> None:
    _finetune_pair(viewer, (64, 64))
    outside = viewer.add_shapes([[[80, 80], [80, 90], [90, 90], [90, 80]]], name="outside")
    widget = _start_finetune(viewer, outside)
    assert widget.job.state is JobState.IDLE
    assert notifications[-1] == (
        "error",
        "Draw at least one rectangle inside the image in 'outside'.",
    )

    small = viewer.add_shapes([[[4, 4], [4, 14], [14, 14], [14, 4]]], name="small")
    widget.regions.set_layer(small)
    widget.start_button.click()
    qtbot.waitUntil(lambda: widget.job.state is JobState.FAILED, timeout=TIMEOUT_MS)
    assert notifications[-1][0] == "error" and "is too small" in notifications[-1][1]
    assert widget.result is None


def test_finetune_widget_refuses_six_axes(viewer, notifications) -> None:
    _finetune_pair(viewer, (2, 2, 2, 2, 16, 16))
    widget = _start_finetune(viewer)
    assert widget.job.state is JobState.IDLE
    assert notifications[-1][0] == "error"
    assert "'noisy' cannot be fine-tuned on: 6-D arrays are not supported" in notifications[-1][1]


def test_composition_widget_rectangle_outside(viewer, qtbot) -> None:
    viewer.add_image(np.zeros((32, 32), np.float32), name="image")
    viewer.add_shapes([[[50, 50], [50, 60], [60, 60], [60, 50]]], name="far")
    widget = open_widget(viewer, "Degradation composition")
    widget.auto.setChecked(False)
    widget.scope.setCurrentText("rectangle")
    widget.analyse_button.click()
    assert widget.job.state is JobState.IDLE
    assert widget.status.text() == "Draw a rectangle in the chosen Shapes layer."
