"""Networks from model files: a model's restoration network (built from its card, its weights
checked against it) and the shipped exposure estimator.

The layer above `allinone.models` (architectures) and `allinone.weights` (files and cards),
which know nothing of each other.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from allinone.errors import ModelFileError
from allinone.models import AllInOneNet, Preset, build_network
from allinone.models.exposure import ExposureNet
from allinone.weights import ModelCard, find_model, load_state, read_card

__all__ = ["estimator_path", "load_estimator", "load_network"]


def load_network(name_or_path: str | Path = "default") -> tuple[AllInOneNet, ModelCard]:
    """The network and card of shipped weights (`default`), a user model, a file, or a preset
    (`tiny`, `paper`: seeded random weights), on the CPU."""
    path = find_model(name_or_path)
    if path is None:
        return _preset_network(str(name_or_path))
    card = read_card(path)
    net = _network_from_card(card, path)
    net.load_state_dict(_checked_state(net, path), strict=False)
    return net, card


def estimator_path() -> Path:
    """The shipped exposure estimator's weights."""
    return Path(str(resources.files("allinone.resources"))) / "exposure" / "estimator.safetensors"


def load_estimator(path: Path | None = None) -> ExposureNet:
    """The exposure estimator stored at `path` (default: the shipped one), on the CPU, in eval
    mode."""
    net = ExposureNet()
    net.load_state_dict(load_state(path or estimator_path()))
    return net.eval()


def _preset_network(name: str) -> tuple[AllInOneNet, ModelCard]:
    torch.manual_seed(0)
    net = build_network(name)
    card = ModelCard(
        name=name,
        preset=net.preset.to_dict(),
        description=f"preset {name}, untrained (random weights, seed 0)",
        training={"steps": 0},
    )
    return net, card


def _network_from_card(card: ModelCard, path: Path) -> AllInOneNet:
    try:
        preset = Preset.from_dict(card.preset)
        return build_network(preset)
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: the card's preset is invalid ({error})") from error


def _checked_state(net: AllInOneNet, path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, checked to match the network exactly (the degradation net optional)."""
    state = load_state(path)
    expected = net.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not k.startswith("degradation_net"))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (e.g. {wrong[0]})")
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        problems.append(f"non-finite values in {bad[0]}")
    if problems:
        raise ModelFileError(f"{path}: weights do not match the card: " + "; ".join(problems))
    return state
