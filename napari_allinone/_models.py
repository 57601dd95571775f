"""Model registry shared by the widgets: the list of models, a change signal, a loader cache.

Nothing here imports torch at module level; the engine loads on first use.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from psygnal import SignalInstance

if TYPE_CHECKING:
    from allinone.infer.restorer import Restorer

models_changed = SignalInstance((), name="models_changed")
"""Emitted after a model was saved or deleted: every model picker refreshes its list."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_lock = threading.Lock()
_cache: dict[tuple[str, str, str], Restorer] = {}


class Saveable(Protocol):
    """What a fine-tuning result offers for saving."""

    def save(self, path: str | Path) -> object: ...


@dataclass(frozen=True)
class ModelChoice:
    """One entry of a model picker: what to show and what to hand to `from_pretrained`."""

    label: str
    value: str
    tooltip: str = ""
    error: str | None = None
    """Why the model cannot be used (a damaged or mismatched file), or None."""


def model_choices() -> list[ModelChoice]:
    """Shipped, preset and user models, as the engine lists them."""
    from allinone.weights import list_models

    choices = []
    for entry in list_models():
        value = str(entry.path) if entry.source == "user" and entry.path else entry.name
        label = entry.name if entry.source == "shipped" else f"{entry.name} ({entry.source})"
        if entry.error:
            label += " – unusable"
        choices.append(ModelChoice(label, value, entry.description or "", entry.error))
    return choices


def model_file_problem(path: str) -> str | None:
    """Why the model file at `path` cannot be used (refused, unreadable card), or None."""
    from allinone.errors import ModelFileError
    from allinone.weights import find_model, read_card

    try:
        read_card(find_model(path))
    except ModelFileError as error:
        return str(error)
    return None


def load_restorer(model: str, device: str, precision: str) -> Restorer:
    """Load a Restorer, reusing the last one loaded with the same settings."""
    from allinone.infer.restorer import Restorer

    key = (model, device, precision)
    with _lock:
        if key not in _cache:
            _cache.clear()
            _cache[key] = Restorer.from_pretrained(model, device=device, precision=precision)
        return _cache[key]


def forget_loaded() -> None:
    """Drop cached Restorers, so a model saved again under the same name is reloaded."""
    with _lock:
        _cache.clear()


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a saved model, or None when it can."""
    if not _NAME.match(name):
        return (
            "Use 1 to 64 letters, digits, '_' or '-', starting with a letter or digit "
            "(e.g. 'my-nuclei-v1')."
        )
    return None


def user_model_path(name: str) -> Path:
    """Where a user model named `name` is (or would be) saved."""
    from allinone.weights import user_models_dir

    return user_models_dir() / f"{name}.safetensors"


def save_model(result: Saveable, name: str) -> Path:
    """Save a fine-tuning result into the user model folder and tell every picker."""
    path = Path(result.save(user_model_path(name)))
    forget_loaded()
    models_changed.emit()
    return path


def available_devices() -> list[tuple[str, str]]:
    """(id, label) of the devices present, as the engine lists them."""
    from allinone.devices import available_devices as engine_devices

    return list(engine_devices())
