"""The quality benchmark: metrics, protocols and `allinone eval` end to end on a fake data root."""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from allinone import evaluate, microscopy_baselines
from allinone.cli import main
from allinone.errors import InputError
from allinone.evaluate import Row, TaskResult, protocols
from allinone.types import DEGRADATIONS

RNG = np.random.default_rng(7)
SHAPE = (32, 48)


def _photo(shape: tuple[int, ...] = (*SHAPE, 3)) -> np.ndarray:
    """A smooth colour gradient with mild texture, uint8."""
    y, x = np.mgrid[: shape[0], : shape[1]]
    base = 60 + 2 * x + y
    image = base[..., None] + np.arange(shape[2] if len(shape) == 3 else 1) * 20
    image = image + RNG.normal(0, 5, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    return image if len(shape) == 3 else image[..., 0]


def _write(folder: Path, names: list[str], grey: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        iio.imwrite(folder / name, _photo(SHAPE if grey else (*SHAPE, 3)))


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    """Two tiny images in every folder the protocols read."""
    root = tmp_path / "data"
    pngs = ["a.png", "b.png"]
    _write(root / "CBSD68" / "clean", pngs)
    for folder in ("Rain100H", "SOTS_indoor_25"):
        _write(root / folder / "input", pngs)
        _write(root / folder / "target", pngs)
    _write(root / "Set5" / "HR", pngs)
    _write(root / "Set14" / "HR", pngs, grey=True)
    _write(root / "Urban100_crop256_50" / "HR", pngs)
    fields = ["fov02.png", "fov03.png"]
    _write(root / "FMD_Confocal_BPAE_B" / "input", fields, grey=True)
    _write(root / "FMD_Confocal_BPAE_B" / "target", fields, grey=True)
    return root


@pytest.fixture
def no_bm3d(monkeypatch: pytest.MonkeyPatch) -> None:
    """Use the fast NL-means fallback (BM3D costs seconds even on tiny images)."""
    monkeypatch.setattr(microscopy_baselines, "bm3d_module", lambda: None)


# --- metrics ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "scores", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),
        ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9], 0.0),
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),
        ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5], 0.5),
        ([0, 0, 1], [0.2, 0.6, 0.6], 0.75),
    ],
)
def test_roc_auc_hand_computed(labels: list[int], scores: list[float], expected: float) -> None:
    assert evaluate.roc_auc(np.array(labels), np.array(scores)) == pytest.approx(expected)


def test_roc_auc_of_one_class_is_nan() -> None:
    assert math.isnan(evaluate.roc_auc(np.ones(4), np.arange(4.0)))


def test_confusion_counts_each_true_type_by_the_type_read() -> None:
    noise, blur, downsample = (DEGRADATIONS.index(n) for n in ("noise", "blur", "downsample"))
    truth = np.array([noise, blur, blur, downsample, downsample, downsample])
    read = np.array([noise, blur, downsample, blur, blur, downsample])
    table = evaluate.confusion(truth, read)
    assert list(table) == list(DEGRADATIONS)
    assert table["downsample"] == {n: 0 for n in DEGRADATIONS} | {
        "blur": 2,
        "downsample": 1,
    }
    assert table["blur"]["downsample"] == 1 and table["noise"]["noise"] == 1
    assert sum(table["rain"].values()) == 0


def test_noise_protocol_psnr_matches_sigma() -> None:
    flat = np.full((96, 96, 3), 128, np.uint8) + np.arange(96, dtype=np.uint8)[:, None, None] // 8
    for sigma in evaluate.SIGMAS:
        noisy = evaluate.add_noise(flat, sigma, seed=3)
        assert evaluate.psnr(flat, noisy) == pytest.approx(20 * np.log10(255 / sigma), abs=0.5)
    np.testing.assert_array_equal(evaluate.add_noise(flat, 25, 3), evaluate.add_noise(flat, 25, 3))


def test_bicubic_pair_crops_to_the_scale() -> None:
    hr, up = evaluate.bicubic_pair(_photo((31, 46, 3)), 4)
    assert hr.shape == up.shape == (28, 44, 3) and up.dtype == np.uint8
    border_only = hr.copy()
    border_only[:4] = 0
    with np.errstate(divide="ignore"):
        assert evaluate.psnr_y(hr, border_only, 4) == math.inf


def test_motion_blur_is_seeded_and_rl_recovers() -> None:
    clean = _photo((48, 48, 3))
    blurred, kernel = evaluate.motion_blur(clean, seed=1)
    again, same = evaluate.motion_blur(clean, seed=1)
    np.testing.assert_array_equal(blurred, again)
    np.testing.assert_array_equal(kernel, same)
    assert kernel.sum() == pytest.approx(1, abs=1e-5)
    restored = evaluate.richardson_lucy(blurred, kernel)
    assert evaluate.psnr(clean, restored) > evaluate.psnr(clean, blurred)


def test_scene_haze_is_seeded_lifts_and_flattens() -> None:
    clean = _photo((48, 64, 3))
    hazy = evaluate.add_scene_haze(clean, seed=3)
    np.testing.assert_array_equal(hazy, evaluate.add_scene_haze(clean, seed=3))
    assert not np.array_equal(hazy, evaluate.add_scene_haze(clean, seed=4))
    assert hazy.dtype == np.uint8 and hazy.shape == clean.shape
    assert hazy.min() > clean.min() and hazy.std() < clean.std()
    change = np.abs(hazy.astype(int) - clean)
    assert change[:8].mean() > change[-8:].mean()  # far at the top


def test_underexposure_is_three_stops_of_linear_light() -> None:
    values = np.linspace(0, 1, 101)
    np.testing.assert_allclose(evaluate.srgb_to_linear(evaluate.linear_to_srgb(values)), values)
    clean = _photo((16, 16, 3))
    clean[0, 0] = 255
    dark = evaluate.underexpose(clean)
    assert dark.dtype == np.uint8 and dark[0, 0, 0] == 99  # 255 * encode(1 / 8)
    linear = lambda image: evaluate.srgb_to_linear(image / 255.0)  # noqa: E731
    np.testing.assert_allclose(linear(dark)[4:, 4:], linear(clean)[4:, 4:] / 8, rtol=0.1)


def test_classical_baselines_keep_shape(no_bm3d: None) -> None:
    photo = _photo((*SHAPE, 3))
    assert evaluate.denoise_classical(photo, 25).shape == photo.shape
    assert evaluate.denoise_classical(photo[..., 0], 10).shape == SHAPE
    assert evaluate.dark_channel_prior(photo).shape == photo.shape
    assert evaluate.clahe(evaluate.darken(photo, 0)).dtype == np.uint8
    assert evaluate.classical_denoiser_name().startswith("NL-means")


@pytest.mark.slow
def test_cbm3d_with_the_true_sigma() -> None:
    pytest.importorskip("bm3d")
    clean = _photo((*SHAPE, 3))
    noisy = evaluate.add_noise(clean, 25, seed=0)
    denoised = evaluate.denoise_classical(noisy, 25)
    assert denoised.shape == clean.shape and denoised.dtype == np.uint8
    assert evaluate.psnr(clean, denoised) > evaluate.psnr(clean, noisy) + 3
    assert evaluate.classical_denoiser_name() == "CBM3D"


def test_parse_tasks() -> None:
    assert evaluate.parse_tasks("all") == list(evaluate.TASKS)
    assert evaluate.parse_tasks("fmd, denoise") == ["denoise", "fmd"]
    with pytest.raises(InputError, match="unknown tasks"):
        evaluate.parse_tasks("denoise,sharpen")


def test_eval_help_names_every_task(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    listed = "".join(capsys.readouterr().out.split())
    assert f"someof{','.join(evaluate.TASKS)}" in listed


def _task(key: str, model: float, *baselines: tuple[str, float]) -> TaskResult:
    rows = [Row(name, value, None, 1) for name, value in baselines]
    return TaskResult(key, key, [*rows, Row("ours", model, None, 1, kind="model")])


def test_goals_judge_what_was_measured() -> None:
    results = [
        _task("denoise-15", 34.0, ("noisy input", 24.6), ("CBM3D, true σ", 33.6)),
        _task("denoise-25", 31.2, ("noisy input", 20.2), ("CBM3D, true σ", 30.8)),
        _task("denoise-50", 27.5, ("noisy input", 14.2), ("CBM3D, true σ", 27.4)),
        _task("fmd", 41.5, ("raw input", 35.0)),
    ]
    met = {goal.text: goal.met for goal in evaluate.goals(results, None)}
    assert met["CBSD68 σ = 25: PSNR ≥ 31.0 dB"] is True
    assert met["every σ: PSNR ≥ CBM3D + 0.3 dB"] is False
    assert met["every task: PSNR above its best baseline"] is True
    assert met["FMD fields 2–6: PSNR ≥ input + 6 dB on average"] is True
    assert met["composition: top-1 ≥ 95 % on single degradations"] is None
    assert met["FMD fields 2–6: PSNR ≥ 39.8 dB"] is True
    assert met["adaptation never below the default, image by image (microscopy)"] is None


def test_microscopy_goals_compare_image_by_image() -> None:
    held_out = _task("fluorescence", 30.0, ("raw input", 20.0))
    held_out.rows[-1].per_image = [29.0, 31.0]
    held_out.rows.insert(1, Row("BM3D, tuned against the truth", 30.5, None, 2, kind="oracle"))
    held_out.rows.append(Row("adapted", 30.2, None, 2, kind="adapted", per_image=[29.5, 30.9]))
    goals = {goal.text: goal for goal in evaluate.goals([held_out], None)}
    oracle = goals["held-out procedural specimens: PSNR ≥ BM3D tuned against the truth"]
    assert oracle.met is False and oracle.detail == "-0.50 dB"
    adapted = goals["adaptation never below the default, image by image (microscopy)"]
    assert adapted.met is False and "fluorescence image 2 (-0.10 dB)" in adapted.detail


# --- end to end ------------------------------------------------------------------------------


def test_eval_command_end_to_end(
    data_root: Path, tmp_path: Path, no_bm3d: None, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocols, "FLUORESCENCE_SIZE", 48)
    output, numbers = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = ["eval", "--model", "tiny", "--device", "cpu", "--data", data_root, "--limit", "1"]
    argv += ["--adapt-seconds", "0.5"]
    code = main([str(a) for a in [*argv, "--output", output, "--json", numbers]])
    assert code == 0, capsys.readouterr().err
    text = output.read_text()
    assert "| commit |" in text and "| training steps | 0 |" in text
    assert "Untrained model" in text and "allinone eval --model tiny" in text
    for title in (
        "Denoising: CBSD68, σ = 25",
        "Deraining: Rain100H",
        "Dehazing: SOTS-indoor",
        "Dehazing: CBSD68 under scene haze",
        "Upsampling: Set14, ×4",
        "Motion deblurring",
        "Low light: CBSD68 (gamma",
        "Low light: CBSD68 3 stops under",
        "Microscopy: FMD",
        "Microscopy: held-out procedural specimens",
        "TV, tuned against the truth",
        "untrained network, 0.5 s self-supervised",
        "tiny, adapted 0.5 s to the image",
        "Degradation composition",
        "Published, not measured here",
    ):
        assert title in text
    for method in ("noisy input", "NL-means", "dark channel prior", "Richardson-Lucy", "CLAHE"):
        assert method in text
    report = json.loads(numbers.read_text())
    assert len(report["tasks"]) == 3 + 1 + 1 + 1 + 6 + 1 + 2 + 1 + 1
    kinds = {row["kind"] for row in report["tasks"][-1]["rows"]}
    assert kinds == {"baseline", "oracle", "model", "adapted"}
    assert all(row["images"] == 1 for task in report["tasks"] for row in task["rows"])
    composition = report["composition"]
    assert composition["single_count"] == 6 * len(evaluate.COMPOSITION_SEVERITIES)
    assert composition["mixture_count"] == evaluate.MIXTURES_PER_IMAGE
    for name, counts in composition["single_confusion"].items():
        assert sum(counts.values()) == len(evaluate.COMPOSITION_SEVERITIES)
        assert counts[name] / sum(counts.values()) == composition["single_top1_per_type"][name]
    assert "| true type | noise |" in text


def test_eval_without_baselines_and_bad_data(data_root: Path, tmp_path: Path, capsys) -> None:
    output = tmp_path / "R.md"
    argv = ["eval", "--model", "tiny", "--device", "cpu", "--data", str(data_root)]
    code = main([*argv, "--tasks", "dehaze", "--no-baselines", "--output", str(output)])
    assert code == 0
    assert "dark channel" not in output.read_text() and "hazy input" in output.read_text()
    ensemble = ["--tasks", "dehaze", "--no-baselines", "--ensemble", "--output", str(output)]
    assert main([*argv, *ensemble]) == 0
    assert "tiny (ours, 8-view ensemble)" in output.read_text()
    assert "--no-baselines --ensemble" in output.read_text()
    switches = ["--scaling", "percentile", "--no-tone", "--no-clipping"]
    assert (
        main([*argv, "--tasks", "dehaze", "--no-baselines", *switches, "--output", str(output)])
        == 0
    )
    text = output.read_text()
    assert "tiny (ours, scaling percentile, no tone keeping, no clipping correction)" in text
    assert "--scaling percentile --no-tone --no-clipping" in text
    assert main([*argv[:-1], str(tmp_path / "missing"), "--output", str(output)]) == 2
    assert "data folder" in capsys.readouterr().err
