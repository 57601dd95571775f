"""`allinone finetune`, end to end through `main` (tiny random model on the CPU, a few steps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from allinone.cli import common, main
from allinone.infer.restorer import Restorer
from allinone.io import write_image

FAST = ["--model", "tiny", "--device", "cpu", "--patch-size", "32", "--batch-size", "2"]


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _pair(folder: Path, shape: tuple[int, int] = (64, 64)) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    clean = rng.integers(20_000, 40_000, shape).astype(np.uint16)
    degraded = np.clip(clean + rng.normal(0, 3_000, shape), 0, 65_535).astype(np.uint16)
    return (
        write_image(folder / "degraded.tif", degraded),
        write_image(folder / "clean.tif", clean),
    )


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the command gets as far as loading a model."""

    def refuse(args):
        raise AssertionError("the model was loaded although the command should stop earlier")

    monkeypatch.setattr(common, "load_restorer", refuse)


def test_finetune_writes_a_loadable_model(tmp_path: Path, capsys) -> None:
    degraded, clean = _pair(tmp_path)
    output = tmp_path / "mine"
    code, out, err = _run(
        capsys,
        "finetune",
        "--input",
        degraded,
        "--target",
        clean,
        "-o",
        output,
        "--steps",
        "2",
        "--json",
        *FAST,
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["output"] == str(tmp_path / "mine.safetensors")
    assert summary["parent"] == "tiny" and summary["steps"] == 2
    assert summary["psnr_after"] >= summary["psnr_before"]
    assert "val_psnr=" in err
    restorer = Restorer.from_pretrained(summary["output"], device="cpu")
    assert restorer.card.parent == "tiny"
    assert restorer.card.training["finetune"]["steps"] == 2


def test_finetune_with_a_region_and_no_validation(tmp_path: Path, capsys) -> None:
    degraded, clean = _pair(tmp_path, (64, 96))
    output = tmp_path / "roi.safetensors"
    argv = ["finetune", "--input", degraded, "--target", clean, "-o", output, "--steps", "1"]
    code, out, err = _run(capsys, *argv, "--val-fraction", "0", "--roi", "0:40,8:90", *FAST)
    assert code == 0, err
    assert "no validation" in out and output.is_file()


def test_images_must_come_in_pairs(tmp_path: Path, capsys, no_model) -> None:
    degraded, clean = _pair(tmp_path)
    argv = ["finetune", "--input", degraded, "--input", degraded, "--target", clean]
    code, _, err = _run(capsys, *argv, "-o", tmp_path / "m", *FAST)
    assert code == 2 and "--target for each degraded --input" in err


def test_steps_and_seconds_exclude_each_other(tmp_path: Path, capsys, no_model) -> None:
    degraded, clean = _pair(tmp_path)
    argv = ["finetune", "--input", degraded, "--target", clean, "-o", tmp_path / "m"]
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in [*argv, "--steps", "2", "--seconds", "3", *FAST]])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_malformed_roi_is_refused(tmp_path: Path, capsys, no_model) -> None:
    degraded, clean = _pair(tmp_path)
    argv = ["finetune", "--input", degraded, "--target", clean, "-o", tmp_path / "m"]
    with pytest.raises(SystemExit):
        main([str(a) for a in [*argv, "--roi", "0:40", *FAST]])
    assert "Y0:Y1,X0:X1" in capsys.readouterr().err


def test_existing_output_is_refused_before_loading(tmp_path: Path, capsys, no_model) -> None:
    degraded, clean = _pair(tmp_path)
    (tmp_path / "m.json").write_text("{}")
    argv = ["finetune", "--input", degraded, "--target", clean, "-o", tmp_path / "m"]
    code, _, err = _run(capsys, *argv, *FAST)
    assert code == 2 and "already exists" in err and "--overwrite" in err


def test_shape_mismatch_is_a_clear_error(tmp_path: Path, capsys) -> None:
    degraded, _ = _pair(tmp_path)
    clean = write_image(tmp_path / "small.tif", np.zeros((64, 32), np.uint16))
    argv = ["finetune", "--input", degraded, "--target", clean, "-o", tmp_path / "m"]
    code, _, err = _run(capsys, *argv, *FAST)
    assert code == 2 and "(64, 64)" in err and "(64, 32)" in err
    assert not (tmp_path / "m.safetensors").exists()


def test_finetune_without_targets_is_self_supervised(tmp_path: Path, capsys) -> None:
    degraded, _ = _pair(tmp_path)
    output = tmp_path / "noise-only"
    argv = ["finetune", "--input", degraded, "-o", output, "--steps", "2", "--json", *FAST]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["self_supervised"] is True
    assert summary["psnr_before"] is not None
    restorer = Restorer.from_pretrained(str(output) + ".safetensors", device="cpu")
    assert restorer.card.training["finetune"]["self_supervised"] is True
