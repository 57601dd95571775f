"""Reliability, untrusted files: model files are safetensors only and a pickle is never loaded;
a damaged, mismatched or oversized weights file or card is refused with a message naming the
problem, in the API, the CLI and the widgets' model list; a card cannot point outside its folder
and a saved model's name cannot leave the models folder.

Covered elsewhere, not repeated here (API): pickles, and pickles named .safetensors or named by
a card: test_weights::test_pickle_files_are_never_loaded, test_a_card_naming_a_pickle_is_refused,
test_a_pickle_named_safetensors_is_refused; truncated, random and missing files:
test_weights::test_truncated_weights, test_random_bytes, test_missing_file; cards that do not fit
the weights: test_weights::test_cards_that_do_not_fit, test_card_that_is_not_json,
test_non_finite_weights; card paths with '..' or absolute:
test_weights::test_card_weights_path_must_stay_in_its_folder; broken user models listed with
their error: test_weights::test_broken_user_models_are_listed_with_an_error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import open_widget
from qtpy.QtCore import Qt

from allinone import weights
from allinone.cli import main
from allinone.errors import ModelFileError
from allinone.infer.restorer import Restorer
from allinone.io import write_image
from allinone.models import PRESETS
from napari_allinone._workers import JobState

TIMEOUT_MS = 60_000


class _Armed:
    """Unpickling this creates `marker`: a pickle that runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def model(tmp_path: Path, tiny_restorer: Restorer) -> Path:
    """A good `tiny` model file (with its card) in a folder of its own."""
    return tiny_restorer.save(tmp_path / "models" / "good")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    """Created if a pickle ever runs; asserted absent after each test that plants one."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a pickle was loaded"


# --- size limits ----------------------------------------------------------------------------------


def _with_card(model: Path, **changes: object) -> Path:
    card = json.loads(model.with_suffix(".json").read_text())
    model.with_suffix(".json").write_text(json.dumps(card | changes))
    return model


def test_oversized_weights_are_refused(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "MAX_WEIGHTS_BYTES", model.stat().st_size - 1)
    for name in (model, model.with_suffix(".json")):
        with pytest.raises(ModelFileError, match=f"{model.stat().st_size} bytes is over the"):
            Restorer.from_pretrained(name, device="cpu")


@pytest.mark.parametrize("given", ["weights", "card"])
def test_oversized_cards_are_refused(model: Path, given: str) -> None:
    _with_card(model, description="x" * weights.MAX_CARD_BYTES)
    name = model if given == "weights" else model.with_suffix(".json")
    with pytest.raises(ModelFileError, match="good.json: the model card is over"):
        Restorer.from_pretrained(name, device="cpu")


def test_oversized_embedded_cards_are_refused(model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model.with_suffix(".json").unlink()  # the card inside the weights file is used
    monkeypatch.setattr(weights, "MAX_CARD_BYTES", 100)
    with pytest.raises(ModelFileError, match="embedded model card is over 100 bytes"):
        Restorer.from_pretrained(model, device="cpu")


def test_a_card_cannot_reach_out_through_a_symlink(tmp_path: Path, model: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    os.replace(model, outside / "good.safetensors")
    (model.parent / "link.safetensors").symlink_to(outside / "good.safetensors")
    _with_card(model, weights="link.safetensors")
    with pytest.raises(ModelFileError, match="escapes its folder"):
        Restorer.from_pretrained(model.with_suffix(".json"), device="cpu")


# --- the CLI --------------------------------------------------------------------------------------


def _truncated(model: Path) -> Path:
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return model


def _bytes(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder / name


def _pickle(folder: Path, name: str, marker: Path) -> Path:
    torch.save({"weights": _Armed(marker)}, folder / name)
    return folder / name


def _escaping(model: Path) -> Path:
    return _with_card(model, weights="../../good.safetensors").with_suffix(".json")


BAD_MODELS: dict[str, tuple[Callable[[Path, Path], Path], str]] = {
    "truncated": (lambda m, _: _truncated(m), "damaged, truncated"),
    "random": (lambda m, _: _bytes(m.parent, "r.safetensors", os.urandom(4096)), "not a readable"),
    "empty": (lambda m, _: _bytes(m.parent, "e.safetensors", b""), "not a readable"),
    "pickle": (lambda m, x: _pickle(m.parent, "evil.pt", x), "pickle-based model files are never"),
    "disguised-pickle": (lambda m, x: _pickle(m.parent, "p.safetensors", x), "not a readable"),
    "other-preset": (
        lambda m, _: _with_card(m, preset=PRESETS["small"].to_dict()),
        "weights do not match the card",
    ),
    "escaping-card": (lambda m, _: _escaping(m), "escapes its folder"),
    "missing": (lambda m, _: m.parent / "absent.safetensors", "no such model file"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_cli_refuses_bad_model_files(
    tmp_path: Path, model: Path, marker: Path, capsys, case: str
) -> None:
    make, problem = BAD_MODELS[case]
    bad = make(model, marker)
    source = write_image(tmp_path / "in.png", np.zeros((16, 16), np.uint8))
    output = tmp_path / "out.png"
    code = main(["restore", str(source), "-o", str(output), "--model", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert bad.name in err and problem in err
    assert not output.exists()


def test_cli_analyze_and_models_with_a_broken_model(
    tmp_path: Path, model: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALLINONE_MODELS_DIR", str(model.parent))
    _truncated(model)
    source = write_image(tmp_path / "in.png", np.zeros((16, 16), np.uint8))
    assert main(["analyze", str(source), "--model", "good", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {model}: not a readable safetensors")
    assert main(["models"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("good ")]
    assert len(listed) == 1 and "unusable: " in listed[0] and "user" in listed[0]


# --- the widgets ----------------------------------------------------------------------------------


@pytest.fixture
def viewer(make_napari_viewer, model: Path, monkeypatch: pytest.MonkeyPatch):
    """A viewer whose user models folder holds `good` and the unusable `broken`."""
    monkeypatch.setenv("ALLINONE_MODELS_DIR", str(model.parent))
    _bytes(model.parent, "broken.safetensors", b"\x00" * 64)
    return make_napari_viewer()


def test_broken_user_model_in_the_widgets(viewer, qtbot, notifications) -> None:
    viewer.add_image(np.zeros((32, 32), np.uint8), name="image")
    restore = open_widget(viewer, "Restore")
    picker = restore.engine.model
    assert "good (user)" in picker.labels()
    broken = picker.labels().index("broken (user) – unusable")
    assert "not a readable safetensors file" in picker.combo.itemData(broken, Qt.ToolTipRole)

    picker.combo.setCurrentIndex(broken)
    picker.combo.activated.emit(broken)  # as when the user picks it
    assert notifications[-1][0] == "warning"
    assert "cannot be used" in notifications[-1][1] and "broken.safetensors" in notifications[-1][1]
    restore.run_button.click()
    qtbot.waitUntil(lambda: restore.job.state is JobState.FAILED, timeout=TIMEOUT_MS)
    assert notifications[-1][0] == "error" and "not a readable" in notifications[-1][1]
    assert [layer.name for layer in viewer.layers] == ["image"]

    composition = open_widget(viewer, "Degradation composition")
    composition.engine.model.combo.setCurrentIndex(broken)
    composition.analyse()
    qtbot.waitUntil(lambda: composition.job.state is JobState.FAILED, timeout=TIMEOUT_MS)
    assert "not a readable" in notifications[-1][1] and composition.probabilities == {}

    assert picker.select("good")
    restore.run_button.click()
    qtbot.waitUntil(lambda: restore.job.state is JobState.DONE, timeout=TIMEOUT_MS)
    assert [layer.name for layer in viewer.layers] == ["image", "image [restored]"]


def test_a_pickle_loaded_by_hand_is_refused(
    viewer, qtbot, notifications, tmp_path: Path, marker: Path
) -> None:
    viewer.add_image(np.zeros((32, 32), np.uint8), name="image")
    widget = open_widget(viewer, "Restore")
    evil = _pickle(tmp_path, "evil.pt", marker)
    widget.engine.model.add_file(str(evil))
    assert notifications[-1][0] == "warning" and "never loaded" in notifications[-1][1]
    assert widget.settings.engine.model == str(evil)
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.job.state is JobState.FAILED, timeout=TIMEOUT_MS)
    assert notifications[-1][0] == "error" and "pickle" in notifications[-1][1]


class _Result:
    """Stands in for a fine-tuning result: records where it is saved."""

    def __init__(self) -> None:
        self.saved: list[Path] = []

    def save(self, path: str | Path) -> Path:
        self.saved.append(Path(path))
        return Path(path)


@pytest.mark.parametrize("name", ["../escape", "sub/dir", "..", "/tmp/abs", ".hidden", "a" * 65])
def test_saved_model_names_cannot_leave_the_models_folder(viewer, notifications, name) -> None:
    widget = open_widget(viewer, "Fine-tune")
    widget.result = _Result()
    widget.name.setText(name)
    widget.save()
    assert widget.result.saved == []
    assert notifications[-1][0] == "error" and "letters, digits" in notifications[-1][1]


def test_a_valid_name_saves_inside_the_models_folder(viewer, model: Path) -> None:
    widget = open_widget(viewer, "Fine-tune")
    widget.result = _Result()
    widget.name.setText("my-model_2")
    widget.save()
    assert widget.result.saved == [model.parent / "my-model_2.safetensors"]
