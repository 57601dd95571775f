"""Model files: safetensors weights plus a JSON model card. Never unpickles anything.

A model `NAME` is the pair `NAME.safetensors` + `NAME.json` (the card is also embedded in the
safetensors header, so a lone weights file still loads). Names resolve, in order, to a path, a
shipped model (`resources/weights`), a user model (the user models folder) or a preset (freshly
initialised, seeded weights). `allinone.loading` builds the networks.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from allinone.errors import ModelFileError
from allinone.models.presets import PRESETS
from allinone.types import DEGRADATIONS

CARD_VERSION = 1
MAX_WEIGHTS_BYTES = 512 * 2**20
MAX_CARD_BYTES = 2**20
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass
class ModelCard:
    """What a weights file is: architecture, size, training and measured quality."""

    name: str
    preset: dict[str, Any]
    architecture: str = "AllInOneNet"
    types: list[str] = field(default_factory=lambda: list(DEGRADATIONS))
    normalization: dict[str, Any] = field(
        default_factory=lambda: {"uint8": "divide by 255", "other": "percentiles 0.1/99.9"}
    )
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    parent: str | None = None
    weights: str | None = None
    save_id: str | None = None
    """Set by each save, in the card beside the weights and in the one inside them: a card
    beside weights of another save is left over from an interrupted save."""
    version: int = CARD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any, source: str) -> ModelCard:
        """Validate a parsed card; raise `ModelFileError` naming what is wrong."""
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: the model card is not a JSON object")
        missing = [key for key in ("name", "preset") if key not in data]
        if missing:
            raise ModelFileError(f"{source}: the model card lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        card = cls(**{k: v for k, v in data.items() if k in known})
        if card.architecture != "AllInOneNet":
            raise ModelFileError(f"{source}: unknown architecture {card.architecture!r}")
        if not isinstance(card.types, list) or list(card.types) != list(DEGRADATIONS):
            raise ModelFileError(f"{source}: the card's types {card.types} are not {DEGRADATIONS}")
        if not isinstance(card.preset, dict):
            raise ModelFileError(f"{source}: the card's preset is not an object")
        return card


@dataclass
class ModelEntry:
    """One model the user can pick."""

    name: str
    source: str
    path: Path | None
    description: str
    error: str | None = None


def shipped_dir() -> Path:
    """The folder of the shipped weights."""
    return Path(str(resources.files("allinone.resources"))) / "weights"


def user_models_dir() -> Path:
    """The user's fine-tuned models (env `ALLINONE_MODELS_DIR`, else the platform's data dir)."""
    override = os.environ.get("ALLINONE_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-allinone", appauthor=False)) / "models"


def card_path(weights_path: Path) -> Path:
    """The JSON card that sits beside a weights file."""
    return weights_path.with_suffix(".json")


def read_card(path: Path) -> ModelCard:
    """Read and validate the card of a weights file: the one beside it (which the user may
    edit), else, or when that one is left over from an interrupted save, the one inside it."""
    json_path = card_path(path)
    if json_path.exists():
        card = read_card_file(json_path)
        if card.save_id is None or _embedded_save_id(path) in (None, card.save_id):
            return card
    header = _read_header(path)
    if "card" not in header:
        raise ModelFileError(f"{path}: no model card beside it ({json_path.name}) or inside it")
    if len(header["card"]) > MAX_CARD_BYTES:
        raise ModelFileError(f"{path}: the embedded model card is over {MAX_CARD_BYTES} bytes")
    try:
        data = json.loads(header["card"])
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: the embedded model card is not valid JSON") from error
    return ModelCard.from_dict(data, str(path))


def _embedded_save_id(path: Path) -> str | None:
    """The save id of the card inside a weights file, or None."""
    try:
        return json.loads(_read_header(path).get("card", "{}")).get("save_id")
    except (json.JSONDecodeError, AttributeError):
        return None


def _check_weights_file(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelFileError(
            f"{path}: pickle-based model files are never loaded (they can run code); "
            "convert the weights to .safetensors"
        )
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    size = path.stat().st_size
    if size > MAX_WEIGHTS_BYTES:
        raise ModelFileError(f"{path}: {size} bytes is over the {MAX_WEIGHTS_BYTES}-byte limit")


def _read_header(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    _check_weights_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:
        raise ModelFileError(
            f"{path}: not a readable safetensors file: damaged, truncated or another format "
            f"({error})"
        ) from error


def load_state(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file, on the CPU."""
    from safetensors.torch import load_file

    _check_weights_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as error:
        raise ModelFileError(
            f"{path}: corrupted or truncated safetensors file ({error})"
        ) from error


def save_model(state: dict[str, Any], card: ModelCard, path: Path) -> Path:
    """Write `path` (.safetensors) and its card atomically; return the weights path.

    Both files are written in full to temporary files beside their targets and flushed to disk
    before either replaces an existing file, so a failure or an interrupt while writing leaves
    the previous model (weights and card) as it was.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    card.weights, card.save_id = path.name, secrets.token_hex(8)
    text = card.to_json()
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _temporary_beside(path) as weights_tmp, _temporary_beside(card_path(path)) as card_tmp:
            save_file(tensors, weights_tmp, metadata={"card": text})
            Path(card_tmp).write_text(text + "\n", encoding="utf-8")
            for tmp in (weights_tmp, card_tmp):
                _flush_to_disk(tmp)
            os.replace(weights_tmp, path)
            os.replace(card_tmp, card_path(path))
    except OSError as error:
        reason = error.strerror or error
        raise ModelFileError(f"{path}: cannot save the model ({reason})") from error
    return path


@contextlib.contextmanager
def _temporary_beside(path: Path) -> Iterator[str]:
    """A new hidden temporary file beside `path`, removed on exit unless it was renamed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _flush_to_disk(name: str) -> None:
    with open(name, "rb+") as handle:
        os.fsync(handle.fileno())


def weights_from_card(json_path: Path) -> Path:
    """The weights file a card names, which must lie in the card's own folder."""
    card = read_card_file(json_path)
    if not card.weights:
        return json_path.with_suffix(".safetensors")
    folder = json_path.parent.resolve()
    target = (folder / card.weights).resolve()
    if target.parent != folder:
        raise ModelFileError(f"{json_path}: the card's weights path escapes its folder")
    return target


def read_card_file(json_path: Path) -> ModelCard:
    """Read and validate a model card given as a .json path."""
    json_path = Path(json_path)
    try:
        if json_path.stat().st_size > MAX_CARD_BYTES:
            raise ModelFileError(f"{json_path}: the model card is over {MAX_CARD_BYTES} bytes")
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except OSError as error:
        reason = error.strerror or error
        raise ModelFileError(f"{json_path}: cannot read the model card ({reason})") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{json_path}: the model card is not valid JSON ({error})") from error
    return ModelCard.from_dict(data, str(json_path))


def find_model(name_or_path: str | os.PathLike) -> Path | None:
    """The weights file a name or path refers to, or None for a preset name."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = path.suffix != "" or os.sep in text or "/" in text
    if looks_like_path:
        if path.suffix.lower() == ".json":
            return weights_from_card(path)
        _check_weights_file(path)
        return path
    for folder in (shipped_dir(), user_models_dir()):
        candidate = folder / f"{text}.safetensors"
        if candidate.is_file():
            return candidate
    if text in PRESETS:
        return None
    known = ", ".join(entry.name for entry in list_models())
    if text == "default":
        raise ModelFileError(
            "the shipped default weights are not installed; pick another model (e.g. tiny)"
        )
    raise ModelFileError(f"unknown model {text!r}; known models: {known}")


def list_models() -> list[ModelEntry]:
    """Shipped models, then the user's, then the presets."""
    entries = []
    for source, folder in (("shipped", shipped_dir()), ("user", user_models_dir())):
        for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
            entries.append(_entry(path, source))
    taken = {entry.name for entry in entries}
    for name in PRESETS:
        if name not in taken:
            description = f"preset {name}, untrained (random weights): for tests and benchmarks"
            entries.append(ModelEntry(name, "preset", None, description))
    return entries


def _entry(path: Path, source: str) -> ModelEntry:
    try:
        _read_header(path)  # a truncated weights file is unusable even beside a good card
        card = read_card(path)
    except ModelFileError as error:
        return ModelEntry(path.stem, source, path, f"unusable: {error}", error=str(error))
    return ModelEntry(path.stem, source, path, card.description or card.preset.get("name", ""))
