"""Resumable training checkpoints without pickle: safetensors shards plus a JSON file.

Every tensor (model, optimiser moments, random-generator states) goes into safetensors shards of
at most `SHARD_BYTES` each (so each file fits the 16 MiB transfer limit of the GPU machines); the
rest (step, config, optimiser hyper-parameters) into `state.json`. Files are replaced atomically,
`state.json` last, so an interrupted save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

SHARD_BYTES = 15 * 2**20


def _shards(tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def save_checkpoint(folder: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write `tensors` as shards and `state` as JSON into `folder`.

    The shards get names of their own (the previous checkpoint's stay untouched until the new
    `state.json` replaces the old one), then the shards no `state.json` names are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    names = []
    for n, shard in enumerate(_shards(tensors)):
        name = f"tensors-{tag}-{n:03d}.safetensors"
        tmp = folder / f".{name}.partial"
        save_file({k: v.detach().contiguous().cpu() for k, v in shard.items()}, str(tmp))
        os.replace(tmp, folder / name)
        names.append(name)
    tmp = folder / ".state.json.partial"
    tmp.write_text(json.dumps({**state, "shards": names}, indent=1))
    os.replace(tmp, folder / "state.json")
    for stale in folder.glob("tensors-*.safetensors"):
        if stale.name not in names:
            stale.unlink()


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, state) of the checkpoint in `folder`, or None when there is none."""
    path = folder / "state.json"
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    tensors: dict[str, torch.Tensor] = {}
    for name in state.pop("shards"):
        tensors.update(load_file(str(folder / name)))
    return tensors, state


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state, flattened to `optim.<index>.<name>` keys."""
    flat = {}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            flat[f"optim.{index}.{name}"] = torch.as_tensor(value)
    return flat


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of `optimizer_tensors` (hyper-parameters come from the optimiser as built)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    current = optimizer.state_dict()
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
