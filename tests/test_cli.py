"""The `allinone` command line, end to end through `main` (tiny random model on the CPU)."""

from __future__ import annotations

import io as stdio
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from allinone.cli import common, main
from allinone.io import read_image, write_image
from allinone.types import DEGRADATIONS

TINY = ["--model", "tiny", "--device", "cpu"]
RNG = np.random.default_rng(1)


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _image(path: Path, shape: tuple[int, ...], dtype: type, **kwargs) -> Path:
    write_image(path, RNG.integers(0, np.iinfo(dtype).max, shape).astype(dtype), **kwargs)
    return path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as loading a model."""

    def refuse(args):
        raise AssertionError("the model was loaded although the command should stop earlier")

    monkeypatch.setattr(common, "load_restorer", refuse)


# --- restore ------------------------------------------------------------------------------------


def test_restore_rgb_png(tmp_path: Path, capsys) -> None:
    source = _image(tmp_path / "photo.png", (500, 500, 3), np.uint8)
    output = tmp_path / "restored.png"
    code, _, err = _run(capsys, "restore", source, "-o", output, *TINY)
    assert code == 0, err
    result = read_image(output)
    assert result.array.shape == (500, 500, 3) and result.array.dtype == np.uint8
    assert result.format == "png"


def test_restore_float_output_writes_float32_tiff(tmp_path: Path, capsys) -> None:
    source = _image(tmp_path / "dim.tif", (40, 48), np.uint16)
    output = tmp_path / "restored.tif"
    code, _, err = _run(capsys, "restore", source, "-o", output, "--float-output", *TINY)
    assert code == 0, err
    result = read_image(output).array
    assert result.dtype == np.float32 and result.shape == (40, 48)
    kept = tmp_path / "kept.tif"
    assert _run(capsys, "restore", source, "-o", kept, *TINY)[0] == 0
    difference = np.rint(result) - read_image(kept).array  # float32 keeps 1/256 count at 5e4
    assert np.abs(difference).max() <= 1 and np.mean(difference != 0) < 0.01


def test_restore_float_output_to_png_is_refused_before_work(
    tmp_path: Path, capsys, no_model
) -> None:
    source = _image(tmp_path / "dim.png", (40, 48), np.uint8)
    output = tmp_path / "restored.png"
    code, _, err = _run(capsys, "restore", source, "-o", output, "--float-output", *TINY)
    assert code != 0 and "float32" in err and ".tif" in err
    assert not output.exists()


def test_restore_grey_png_shows_progress_on_a_terminal(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(stdio.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    source = _image(tmp_path / "grey.png", (96, 128), np.uint16)
    output = tmp_path / "grey-restored.png"
    code, _, _ = _run(capsys, "restore", source, "-o", output, *TINY)
    assert code == 0, terminal.getvalue()
    assert "restoring:" in terminal.getvalue()
    result = read_image(output)
    assert result.array.shape == (96, 128) and result.array.dtype == np.uint16


def _restored_with(tmp_path: Path, capsys, shape, *options: str) -> tuple[np.ndarray, np.ndarray]:
    """(a random uint8 image of `shape`, what `allinone restore ... OPTIONS` made of it)."""
    source = _image(tmp_path / "in.png", shape, np.uint8)
    output = tmp_path / "out.png"
    code, _, err = _run(capsys, "restore", source, "-o", output, *TINY, *options)
    assert code == 0, err
    return read_image(source).array, read_image(output).array


@pytest.mark.parametrize("scaling", ["auto", "percentile", "range"])
def test_restore_scaling_option(tmp_path: Path, capsys, scaling: str) -> None:
    from allinone import Restorer

    image, restored = _restored_with(tmp_path, capsys, (40, 40), "--scaling", scaling)
    expected = Restorer.from_pretrained("tiny", device="cpu").restore(image, scaling=scaling)
    np.testing.assert_array_equal(restored, expected)


def test_restore_ensemble_option(tmp_path: Path, capsys) -> None:
    from allinone import Restorer

    image, restored = _restored_with(tmp_path, capsys, (40, 48, 3), "--ensemble")
    expected = Restorer.from_pretrained("tiny", device="cpu").restore(image, ensemble=True)
    np.testing.assert_array_equal(restored, expected)


def _learn_noise(tmp_path: Path, capsys, seconds: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(a smooth Poisson-noisy uint8 image, `restore --learn-noise SECONDS` of it, stderr)."""
    yy, xx = np.mgrid[0:96, 0:96]  # a validation strip with enough blind spots to confirm a gain
    clean = 60 + 40 * np.sin(xx / 7.0) + 30 * np.cos(yy / 9.0)
    source, output = tmp_path / "in.png", tmp_path / "out.png"
    noisy = np.random.default_rng(7).poisson(clean.clip(0))
    write_image(source, noisy.clip(0, 255).astype(np.uint8))
    code, _, err = _run(capsys, "restore", source, "-o", output, *TINY, "--learn-noise", seconds)
    assert code == 0, err
    image, restored = read_image(source).array, read_image(output).array
    assert restored.shape == image.shape and restored.dtype == image.dtype
    return image, restored, err


def test_restore_learn_noise_restores_with_the_adapted_weights_when_they_win(
    tmp_path: Path, capsys
) -> None:
    from allinone import Restorer

    image, restored, err = _learn_noise(tmp_path, capsys, "8")
    assert re.search(r"restoring with (the|\d+% of the way from the original to the) adapted", err)
    untuned = Restorer.from_pretrained("tiny", device="cpu").restore(image)
    assert not np.array_equal(restored, untuned)


def test_restore_learn_noise_keeps_the_original_weights_when_adaptation_does_not_win(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    from allinone import Restorer
    from allinone.train import finetune

    monkeypatch.setattr(finetune._Best, "improved", property(lambda self: False))
    image, restored, err = _learn_noise(tmp_path, capsys, "1")
    assert "restoring with the original weights" in err
    untuned = Restorer.from_pretrained("tiny", device="cpu").restore(image)
    np.testing.assert_array_equal(restored, untuned)


def test_restore_learn_noise_on_a_stack_keeps_its_dtype_axes_and_spacing(
    tmp_path: Path, capsys
) -> None:
    stack = RNG.poisson(30.0, (4, 40, 48)).astype(np.uint16)
    source, output = tmp_path / "stack.tif", tmp_path / "stack-restored.tif"
    write_image(source, stack, axes="ZYX", metadata={"imagej": {"spacing": 2.5, "unit": "um"}})
    code, _, err = _run(capsys, "restore", source, "-o", output, *TINY, "--learn-noise", "1")
    assert code == 0, err
    result = read_image(output)
    assert result.array.shape == stack.shape and result.array.dtype == np.uint16
    assert result.axes == "ZYX" and result.metadata["imagej"]["spacing"] == 2.5


@pytest.mark.usefixtures("sure_of_haze")
def test_restore_no_scene_haze_option(tmp_path: Path, capsys) -> None:
    from allinone import Restorer

    image, restored = _restored_with(tmp_path, capsys, (160, 144, 3), "--no-scene-haze")
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    expected = restorer.restore(image, scene_haze=False)
    np.testing.assert_array_equal(restored, expected)
    assert not np.array_equal(expected, restorer.restore(image))


def test_restore_zyx_tiff_keeps_axes_and_metadata(tmp_path: Path, capsys) -> None:
    meta = {"resolution": (5.0, 5.0), "resolutionunit": 3}
    source = _image(tmp_path / "stack.tif", (16, 64, 64), np.uint16, axes="ZYX", metadata=meta)
    output = tmp_path / "stack-restored.tif"
    tiling = ["--tile", 64, "--overlap", 8]
    code, _, err = _run(capsys, "restore", source, "-o", output, *TINY, *tiling)
    assert code == 0, err
    result = read_image(output)
    assert result.array.shape == (16, 64, 64) and result.array.dtype == np.uint16
    assert result.axes == "ZYX"
    assert result.metadata["resolution"] == (5.0, 5.0)


def test_existing_output_is_refused_before_loading(tmp_path: Path, capsys, no_model) -> None:
    source = _image(tmp_path / "in.png", (8, 8), np.uint8)
    output = tmp_path / "out.png"
    output.write_bytes(b"keep me")
    code, _, err = _run(capsys, "restore", source, "-o", output, *TINY)
    assert code == 2
    assert err.startswith("error:") and "--overwrite" in err
    assert output.read_bytes() == b"keep me"


@pytest.mark.parametrize("extra", [[], ["--overwrite"]])
def test_output_same_as_input_is_refused(tmp_path: Path, capsys, no_model, extra) -> None:
    source = _image(tmp_path / "in.tif", (8, 8), np.uint16)
    before = source.read_bytes()
    code, _, err = _run(capsys, "restore", source, "-o", source, *TINY, *extra)
    assert code == 2 and "input" in err
    assert source.read_bytes() == before


def test_missing_input_is_a_clear_error(tmp_path: Path, capsys, no_model) -> None:
    missing = tmp_path / "nowhere.tif"
    code, out, err = _run(capsys, "restore", missing, "-o", tmp_path / "out.tif")
    assert code == 2 and out == ""
    assert err == f"error: Cannot read {missing}: no such file.\n"


def test_unwritable_format_is_refused_before_loading(tmp_path: Path, capsys, no_model) -> None:
    source = _image(tmp_path / "stack.tif", (4, 8, 8), np.uint16, axes="ZYX")
    code, _, err = _run(capsys, "restore", source, "-o", tmp_path / "out.jpg")
    assert code == 2 and "JPEG" in err
    assert not (tmp_path / "out.jpg").exists()


def test_interrupt_exits_130_without_output(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Interrupted:
        def restore(self, *args, **kwargs):
            raise KeyboardInterrupt

    monkeypatch.setattr(common, "load_restorer", lambda args: Interrupted())
    source = _image(tmp_path / "in.png", (8, 8), np.uint8)
    code, _, err = _run(capsys, "restore", source, "-o", tmp_path / "out.png")
    assert code == 130 and "interrupted" in err
    assert [p.name for p in tmp_path.iterdir()] == ["in.png"]


@pytest.mark.parametrize("bad", [["--tile", "0"], ["--overlap", "-1"], []])
def test_bad_arguments_exit_2(tmp_path: Path, capsys, bad: list[str]) -> None:
    output = [] if not bad else ["-o", str(tmp_path / "out.png")]
    with pytest.raises(SystemExit) as info:
        main(["restore", str(tmp_path / "in.png"), *output, *bad])
    assert info.value.code == 2


# --- analyze and models -------------------------------------------------------------------------


def test_analyze_json(tmp_path: Path, capsys) -> None:
    source = _image(tmp_path / "photo.png", (64, 64, 3), np.uint8)
    code, out, err = _run(capsys, "analyze", source, *TINY, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report) == {
        "input",
        "model",
        "composition",
        "dominant",
        "noise_level",
        "under_exposure_stops",
    }
    assert report["noise_level"] >= 0 and report["under_exposure_stops"] >= 0
    assert report["input"] == str(source) and report["model"] == "tiny"
    assert list(report["composition"]) == list(DEGRADATIONS)
    assert all(0.0 <= p <= 1.0 for p in report["composition"].values())
    best = max(report["composition"], key=report["composition"].get)
    assert report["dominant"] == (best if report["composition"][best] >= 0.5 else None)
    code, out, err = _run(capsys, "analyze", source, *TINY, "--json", "--no-flips")
    assert code == 0, err
    assert json.loads(out)["composition"] != report["composition"]  # one pass, not four


def test_analyze_table(tmp_path: Path, capsys) -> None:
    source = _image(tmp_path / "grey.png", (48, 48), np.uint8)
    code, out, err = _run(capsys, "analyze", source, *TINY)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:-2]]
    assert [row[0] for row in rows] == list(DEGRADATIONS)
    assert all(0.0 <= float(row[1]) <= 1.0 and len(row[2]) == 20 for row in rows)
    assert out.splitlines()[-2].startswith("noise level: sigma ")
    assert out.splitlines()[-1].startswith("dominant:")


def test_models_lists_tiny(capsys) -> None:
    code, out, _ = _run(capsys, "models")
    assert code == 0
    assert any(line.split()[0] == "tiny" for line in out.splitlines())


# --- as a program -------------------------------------------------------------------------------


def test_module_runs_as_a_program(tmp_path: Path) -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "allinone.cli", "--help"], capture_output=True, text=True
    )
    assert help_run.returncode == 0
    assert all(name in help_run.stdout for name in ("restore", "analyze", "models"))

    missing = subprocess.run(
        [sys.executable, "-m", "allinone.cli", "analyze", str(tmp_path / "none.png")],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2
    assert missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
