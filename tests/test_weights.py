"""Model files: safetensors + JSON card round trips, refusing pickles and damaged files, finding
and listing models; device and precision choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_restorer, randomize_zero_init
from safetensors.torch import save_file

from allinone.devices import (
    available_devices,
    cpu_has_bf16,
    resolve_device,
    resolve_precision,
)
from allinone.errors import InputError, ModelFileError
from allinone.infer.restorer import Restorer
from allinone.models import PRESETS, Preset, build_network
from allinone.weights import ModelCard, find_model, list_models, read_card, user_models_dir

IMAGE = np.random.default_rng(0).integers(0, 256, size=(24, 40), dtype=np.uint8)


@pytest.fixture(scope="module")
def trained() -> Restorer:
    """A tiny Restorer whose weights differ from the seeded preset's."""
    torch.manual_seed(1)
    return make_restorer(randomize_zero_init(build_network("tiny"), 0.05, seed=2), "mine")


@pytest.fixture
def saved(tmp_path: Path, trained: Restorer) -> Path:
    return trained.save(tmp_path / "m")


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch) -> Path:
    folder = tmp_path / "user-models"
    folder.mkdir()
    monkeypatch.setenv("ALLINONE_MODELS_DIR", str(folder))
    return folder


def test_save_and_load_round_trip(saved: Path, trained: Restorer) -> None:
    assert saved.name == "m.safetensors" and saved.is_file()
    card = json.loads(saved.with_suffix(".json").read_text())
    assert card["name"] == "mine"
    assert card["weights"] == "m.safetensors"
    assert card["architecture"] == "AllInOneNet"
    assert card["types"] == ["noise", "blur", "haze", "rain", "low_light", "downsample"]
    assert Preset.from_dict(card["preset"]) == PRESETS["tiny"]
    loaded = Restorer.from_pretrained(saved, device="cpu")
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    np.testing.assert_array_equal(loaded.restore(IMAGE), trained.restore(IMAGE))
    # the card path works too, and so does a lone weights file (card embedded in its header)
    by_card = Restorer.from_pretrained(saved.with_suffix(".json"), device="cpu")
    np.testing.assert_array_equal(by_card.restore(IMAGE), trained.restore(IMAGE))
    saved.with_suffix(".json").unlink()
    alone = Restorer.from_pretrained(str(saved), device="cpu")
    assert alone.card.name == "mine"
    np.testing.assert_array_equal(alone.restore(IMAGE), trained.restore(IMAGE))


def test_save_leaves_no_partial_files(saved: Path) -> None:
    assert sorted(p.name for p in saved.parent.iterdir()) == ["m.json", "m.safetensors"]


class Armed:
    """Unpickling this creates `marker`: proof that a pickle would run code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_the_armed_pickle_does_run_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned-control"
    torch.save({"weights": Armed(marker)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)  # deliberately, to prove the point
    assert marker.exists()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt", ".bin", ".pkl"])
def test_pickle_files_are_never_loaded(tmp_path: Path, suffix: str) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / f"model{suffix}"
    torch.save({"weights": Armed(marker)}, path)
    path.with_suffix(".json").write_text(
        ModelCard(name="model", preset=PRESETS["tiny"].to_dict()).to_json()
    )
    for name in (path, str(path), path.with_suffix(".json")):
        with pytest.raises(ModelFileError, match="pickle"):
            Restorer.from_pretrained(name, device="cpu")
    with pytest.raises(ModelFileError, match="pickle"):
        find_model(path)
    assert not marker.exists()


def test_a_card_naming_a_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save(Armed(marker), tmp_path / "evil.pt")
    card = ModelCard(name="evil", preset=PRESETS["tiny"].to_dict(), weights="evil.pt")
    (tmp_path / "evil.json").write_text(card.to_json())
    with pytest.raises(ModelFileError, match="pickle"):
        Restorer.from_pretrained(tmp_path / "evil.json", device="cpu")
    assert not marker.exists()


def test_a_pickle_named_safetensors_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "sneaky.safetensors"
    torch.save(Armed(marker), path)
    with pytest.raises(ModelFileError, match="safetensors"):
        Restorer.from_pretrained(path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("keep_card", [True, False])
def test_truncated_weights(saved: Path, keep_card: bool) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    if not keep_card:
        saved.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match=str(saved.name)):
        Restorer.from_pretrained(saved, device="cpu")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.safetensors"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        Restorer.from_pretrained(path, device="cpu")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        Restorer.from_pretrained(tmp_path / "absent.safetensors", device="cpu")


def edit_card(weights: Path, **changes) -> None:
    path = weights.with_suffix(".json")
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"architecture": "ResNet50"}, "unknown architecture 'ResNet50'"),
        ({"preset": {"name": "bogus"}}, "preset is invalid"),
        ({"preset": "tiny"}, "preset is not an object"),
        ({"preset": PRESETS["tiny"].to_dict() | {"block": "lstm"}}, "preset is invalid"),
        ({"types": ["noise", "blur"]}, "types"),
        ({"preset": PRESETS["small"].to_dict()}, "do not match the card"),
        ({"preset": PRESETS["tiny"].to_dict() | {"width": 16}}, "tensors of the wrong shape"),
        ({"preset": PRESETS["tiny"].to_dict() | {"dfpir": False}}, "unexpected tensors"),
        ({"preset": PRESETS["tiny"].to_dict() | {"refine_blocks": 1}}, "missing tensors"),
    ],
)
def test_cards_that_do_not_fit(saved: Path, changes: dict, message: str) -> None:
    edit_card(saved, **changes)
    with pytest.raises(ModelFileError, match=message):
        Restorer.from_pretrained(saved, device="cpu")


def test_card_that_is_not_json(saved: Path) -> None:
    saved.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        Restorer.from_pretrained(saved, device="cpu")
    saved.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(ModelFileError, match="not a JSON object"):
        Restorer.from_pretrained(saved, device="cpu")
    saved.with_suffix(".json").write_text('{"name": "x"}')
    with pytest.raises(ModelFileError, match="lacks preset"):
        Restorer.from_pretrained(saved, device="cpu")


def test_non_finite_weights(tmp_path: Path, trained: Restorer) -> None:
    state = {key: value.contiguous() for key, value in trained.state_dict().items()}
    state["embed.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    card = ModelCard(name="nan", preset=PRESETS["tiny"].to_dict(), weights=path.name)
    save_file(state, str(path), metadata={"card": card.to_json()})
    with pytest.raises(ModelFileError, match="non-finite values in embed.weight"):
        Restorer.from_pretrained(path, device="cpu")


@pytest.mark.parametrize("target", ["../x.safetensors", "sub/../../x.safetensors", "/tmp/x.st"])
def test_card_weights_path_must_stay_in_its_folder(tmp_path: Path, trained, target: str) -> None:
    folder = tmp_path / "models"
    trained.save(tmp_path / "x")  # a real model just outside the folder
    folder.mkdir()
    card = ModelCard(name="escape", preset=PRESETS["tiny"].to_dict(), weights=target)
    (folder / "escape.json").write_text(card.to_json())
    with pytest.raises(ModelFileError, match="escapes its folder"):
        Restorer.from_pretrained(folder / "escape.json", device="cpu")


def test_user_models_are_found_and_listed(models_dir: Path, trained: Restorer) -> None:
    assert user_models_dir() == models_dir
    trained.save(models_dir / "mine")
    assert find_model("mine") == models_dir / "mine.safetensors"
    entries = {entry.name: entry for entry in list_models()}
    assert entries["mine"].source == "user"
    assert entries["mine"].path == models_dir / "mine.safetensors"
    assert entries["mine"].error is None
    assert {"tiny", "small", "base", "paper"} <= set(entries)
    assert entries["tiny"].source == "preset" and entries["tiny"].path is None
    restorer = Restorer.from_pretrained("mine", device="cpu")
    np.testing.assert_array_equal(restorer.restore(IMAGE), trained.restore(IMAGE))


def test_a_user_model_shadows_a_preset(models_dir: Path, trained: Restorer) -> None:
    trained.save(models_dir / "tiny")
    entries = [entry for entry in list_models() if entry.name == "tiny"]
    assert [entry.source for entry in entries] == ["user"]
    assert find_model("tiny") == models_dir / "tiny.safetensors"


def test_broken_user_models_are_listed_with_an_error(models_dir: Path, trained) -> None:
    trained.save(models_dir / "good")
    (models_dir / "garbage.safetensors").write_bytes(b"\x00" * 100)
    trained.save(models_dir / "badcard")
    (models_dir / "badcard.json").write_text("{truncated")
    trained.save(models_dir / "alien")
    edit_card(models_dir / "alien.safetensors", architecture="Other")
    trained.save(models_dir / "oddtypes")
    edit_card(models_dir / "oddtypes.safetensors", types=5)
    entries = {entry.name: entry for entry in list_models()}
    assert entries["good"].error is None
    for name in ("garbage", "badcard", "alien", "oddtypes"):
        assert entries[name].source == "user"
        assert entries[name].error, name
        assert entries[name].description.startswith("unusable")
    with pytest.raises(ModelFileError):
        Restorer.from_pretrained("garbage", device="cpu")


def test_unknown_names_list_the_known_models(models_dir: Path, trained) -> None:
    trained.save(models_dir / "mine")
    with pytest.raises(ModelFileError, match="unknown model 'nope'.*mine.*tiny"):
        find_model("nope")
    with pytest.raises(ModelFileError, match="unknown model"):
        Restorer.from_pretrained("nope", device="cpu")


def test_presets_load_seeded(models_dir: Path) -> None:
    assert find_model("tiny") is None
    a = Restorer.from_pretrained("tiny", device="cpu")
    b = Restorer.from_pretrained("tiny", device="cpu")
    assert a.card.training == {"steps": 0}
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value)


def test_read_card_prefers_the_file_beside(saved: Path) -> None:
    edit_card(saved, description="edited beside")
    assert read_card(saved).description == "edited beside"


# --- devices ---------------------------------------------------------------------------------


def test_auto_device_is_cpu_here() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert available_devices()[:2] == [("auto", "auto (cpu)"), ("cpu", "CPU")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda(name: str) -> None:
    with pytest.raises(InputError, match="CUDA"):
        resolve_device(name)


@pytest.mark.parametrize("name", ["gpu", "tpu", "meta", "cuda:x", ""])
def test_unknown_devices(name: str) -> None:
    with pytest.raises(InputError, match="device"):
        resolve_device(name)


def test_mps_when_absent() -> None:
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    with pytest.raises(InputError, match="MPS"):
        resolve_device("mps")


def test_precision() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == resolve_precision("fp16", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    native = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert resolve_precision("auto", cpu) == native
    for bad in ("fp8", "half", "", "FP16"):
        with pytest.raises(InputError, match="precision"):
            resolve_precision(bad, cpu)
