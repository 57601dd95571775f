"""The training recipe's options: restore losses, the bidirectional share, progressive patches
and the weights' moving average (what benchmarks/training_study.py compares)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_training_config

from allinone.errors import InputError
from allinone.infer.restorer import Restorer
from allinone.models import build_network
from allinone.train.loop import Trainer
from allinone.train.losses import bidirectional_loss, restore_loss, share_indices

CONFIG = tiny_training_config()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Training photos and validation photos, nothing else."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for folder, names in {
        "BSD432/clean": ["0.jpg", "1.jpg"],
        "DIV2K_val_crop256/clean": [f"08{i:02d}.png" for i in range(4)],
    }.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            iio.imwrite(root / folder / name, rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return root


def test_restore_losses() -> None:
    clean = torch.full((2, 3, 8, 8), 0.5)
    restored = clean + 0.1
    assert restore_loss(restored, clean, "l1") == pytest.approx(F.l1_loss(restored, clean).item())
    assert restore_loss(restored, clean, "charbonnier") == pytest.approx(0.1, rel=1e-3)
    assert restore_loss(clean, clean, "charbonnier") == pytest.approx(1e-3, rel=1e-3)
    # the PSNR loss falls by the same amount for every halving of the error, wherever it is
    losses = [restore_loss(clean + e, clean, "psnr").item() for e in (0.2, 0.1, 0.05)]
    assert losses[0] > losses[1] > losses[2]
    assert losses[0] - losses[1] == pytest.approx(losses[1] - losses[2], rel=1e-4)
    with pytest.raises(ValueError, match="unknown restore loss"):
        restore_loss(restored, clean, "l3")


def test_share_indices_spread_over_the_batch() -> None:
    assert share_indices(10, 1.0, torch.device("cpu")) is None
    assert share_indices(10, 0.3, torch.device("cpu")).tolist() == [0, 4, 9]
    assert share_indices(4, 0.01, torch.device("cpu")).tolist() == [0]


def test_the_degradation_branch_sees_only_its_share() -> None:
    torch.manual_seed(0)
    net = build_network("tiny").eval()
    degraded, clean = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        output = net(degraded)
        half = bidirectional_loss(net, output, clean, degraded, None, 0.5, 0.0, degrade_share=0.5)
        index = [0, 3]
        expected = F.l1_loss(
            net.degrade(clean[index], [r[index] for r in output.representation]), degraded[index]
        )
        whole = bidirectional_loss(net, output, clean, degraded, None, 0.5, 0.0)
        none = bidirectional_loss(net, output, clean, degraded, None, 0.5, 0.0, degrade_share=0.0)
    assert half["degrade"] == pytest.approx(expected.item())
    assert half["degrade"] != pytest.approx(whole["degrade"].item())
    assert "degrade" not in none and none["total"] == pytest.approx(none["restore"].item())


def test_progressive_patches_keep_the_pixels_of_a_step() -> None:
    config = dataclasses.replace(
        CONFIG, steps=106, cycle_start=100, batch_size=4, patch_size=32, patch_schedule=[16, 32]
    )
    assert [config.patch_at(s) for s in range(100, 106)] == [16, 16, 16, 32, 32, 32]
    assert [config.batch_at(s) for s in (100, 105)] == [16, 4]
    assert dataclasses.replace(config, patch_schedule=None).patch_at(100) == 32


def test_a_progressive_run_trains_on_each_size(data: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, patch_schedule=[16, 32], batch_size=2)
    trainer = Trainer(config, tmp_path, data=data)
    seen = []
    while trainer.step < config.steps:
        seen.append((trainer.config.patch_at(trainer.step), trainer.config.batch_at(trainer.step)))
        assert np.isfinite(trainer.train_step()["total"])
    assert seen == [(16, 8), (16, 8), (32, 2), (32, 2)]
    assert trainer.sampler.patch == 32


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("restore_loss", "l2", "restore_loss"),
        ("degrade_share", 1.5, "degrade_share"),
        ("ema_decay", 1.0, "ema_decay"),
        ("patch_schedule", [8], "patch_schedule"),
    ],
)
def test_recipe_settings_are_checked(field: str, value, message: str) -> None:
    with pytest.raises(InputError, match=message):
        dataclasses.replace(CONFIG, **{field: value})


def test_the_moving_average_validates_exports_and_resumes(data: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, ema_decay=0.5)
    straight = Trainer(config, tmp_path / "straight", data=data)
    straight.run()
    net, average = straight.net.state_dict(), straight.model.state_dict()
    assert not torch.equal(net["embed.weight"], average["embed.weight"])
    path = straight.export(tmp_path / "model", name="averaged")
    exported = Restorer.from_pretrained(path, device="cpu").state_dict()
    assert all(torch.equal(v, average[k]) for k, v in exported.items())
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["training"]["validation"] == straight.validate()
    first = Trainer(config, tmp_path / "resumed", data=data)
    first.run(until=2)
    resumed = Trainer(config, tmp_path / "resumed", data=data)
    resumed.run()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, average[key]), key


def test_an_average_joining_a_run_starts_from_its_weights(data: Path, tmp_path: Path) -> None:
    Trainer(CONFIG, tmp_path, data=data).run(until=2)
    joined = Trainer(dataclasses.replace(CONFIG, ema_decay=0.9), tmp_path, data=data)
    for key, value in joined.model.state_dict().items():
        assert torch.equal(value, joined.net.state_dict()[key]), key
