"""Training: data selection, the bidirectional loop, exact resuming, checkpoints and export."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from conftest import tiny_training_config

from allinone.cli import main
from allinone.cli.maintainers.train import _TrainingPace
from allinone.degradations import to_8_bits
from allinone.devices import cpu_has_bf16
from allinone.errors import InputError
from allinone.infer.restorer import Restorer
from allinone.models import PRESETS, build_network
from allinone.train import checkpoint, composition
from allinone.train.checkpoint import SHARD_BYTES, _shards, load_checkpoint, save_checkpoint
from allinone.train.composition import (
    HeadConfig,
    head_inputs,
    train_head,
    validate,
    validation_set,
)
from allinone.train.data import (
    ImageSet,
    PatchSampler,
    data_root,
    degrade_batch,
    load_images,
    load_real_pairs,
    raw_frame_pairs,
    real_pair_paths,
    training_paths,
)
from allinone.train.loop import TrainConfig, Trainer
from allinone.train.losses import bidirectional_loss, psnr
from allinone.types import DEGRADATIONS

CONFIG = tiny_training_config()
REPO = Path(__file__).resolve().parents[1]


def picture(rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    y, x = np.mgrid[:64, :64]
    base = np.sin(x / rng.uniform(3, 9) + rng.uniform(0, 6)) * np.cos(y / rng.uniform(3, 9)) * 80
    noise = rng.normal(0, 8, (64, 64, channels))
    return np.clip(base[..., None] + 128 + noise, 0, 255).astype(np.uint8).squeeze()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A miniature shared data folder, with test sets that training must not read."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    folders = {
        "BSD432/clean": [f"{i}.jpg" for i in range(3)],
        "DIV2K_val_crop256/clean": [f"08{i:02d}.png" for i in range(6)],
        "FMD_Confocal_BPAE_B/target": ["fov02.png", "fov07.png", "fov08.png"],
        "FMD_Confocal_BPAE_B/input": ["fov02.png", "fov07.png"],
        "CBSD68/clean": ["0.png"],
    }
    for folder, names in folders.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            grey = folder.startswith("FMD")
            iio.imwrite(root / folder / name, picture(rng, 1 if grey else 3))
    return root


def test_training_reads_only_the_training_sets(data: Path) -> None:
    photos, micro, validation = training_paths(data, 2)
    names = [p.relative_to(data).as_posix() for p in photos]
    assert names == [
        "BSD432/clean/0.jpg",
        "BSD432/clean/1.jpg",
        "BSD432/clean/2.jpg",
        "DIV2K_val_crop256/clean/0800.png",
        "DIV2K_val_crop256/clean/0801.png",
        "DIV2K_val_crop256/clean/0802.png",
        "DIV2K_val_crop256/clean/0803.png",
    ]
    assert [p.name for p in micro] == ["fov07.png", "fov08.png"]  # never the test fields 2-6
    assert [p.name for p in validation] == ["0804.png", "0805.png"]
    assert not set(validation) & set(photos)
    pairs = [(n.relative_to(data).as_posix(), c.name) for n, c in real_pair_paths(data)]
    assert pairs == [("FMD_Confocal_BPAE_B/input/fov07.png", "fov07.png")]  # fov08 has no input


def test_real_pairs_are_stretched_and_cut_alike(tmp_path: Path) -> None:
    y, x = np.mgrid[:64, :64]
    clean = (20 + 60 * (np.sin(x / 5) * np.cos(y / 7) + 1) / 2).astype(np.uint8)
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 4, clean.shape), 0, 255)
    paths = (tmp_path / "noisy.png", tmp_path / "clean.png")
    iio.imwrite(paths[0], noisy.astype(np.uint8))
    iio.imwrite(paths[1], clean)
    (pair,) = load_real_pairs([paths])
    assert pair.shape == (64, 64, 2) and pair.dtype == np.uint8
    assert pair[..., 0].max() > 240 and pair[..., 1].max() > 200  # a dim field, stretched
    images = ImageSet([picture(np.random.default_rng(1))], [], [pair])
    noisy_patches, clean_patches = PatchSampler(images, 16, 0.0, seed=0).sample_pairs(6)
    assert noisy_patches.shape == clean_patches.shape == (6, 3, 16, 16)
    for patch in (noisy_patches, clean_patches):
        assert torch.equal(patch[:, 0], patch[:, 2])
    difference = (noisy_patches - clean_patches).abs().mean()
    assert difference < 0.1  # the same windows, flipped and rotated alike


def test_real_pairs_join_the_batch_labelled_noise() -> None:
    photos = torch.rand(2, 3, 16, 16)
    noisy, clean = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    targets, batch = degrade_batch(
        photos, None, torch.Generator().manual_seed(0), 0.0, (noisy, clean)
    )
    assert torch.equal(targets[2:], clean) and torch.equal(batch.degraded[2:], noisy)
    assert batch.labels[2].tolist() == [float(t == "noise") for t in DEGRADATIONS]


def test_training_with_real_pairs(data: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, batch_size=4, real_pair_fraction=0.25, steps=2)
    trainer = Trainer(config, tmp_path, data=data)
    assert trainer.real_per_batch == 1 and trainer.sources["real_pairs"] == 1
    trainer.run()
    assert all(np.isfinite(record["total"]) for record in log_of(tmp_path))


def test_raw_frames_pair_each_frame_with_the_mean_of_the_others(tmp_path: Path) -> None:
    folder = tmp_path / "FMD_Confocal_BPAE_B" / "raw_frames" / "fov19"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    scene = 40 + 30 * np.sin(np.mgrid[:32, :32][1] / 4)
    frames = [np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255) for _ in range(5)]
    for n, frame in enumerate(frames):
        iio.imwrite(folder / f"frame{n:02d}.png", frame.astype(np.uint8))
    pairs = raw_frame_pairs(tmp_path, 3)
    assert len(pairs) == 3 and all(p.shape == (32, 32, 2) for p in pairs)
    noisy, clean = pairs[0][..., 0].astype(float), pairs[0][..., 1].astype(float)
    assert np.abs(clean - noisy).mean() > 1  # the frame's own noise is not in its target
    assert raw_frame_pairs(tmp_path, 0) == [] and raw_frame_pairs(tmp_path / "none", 3) == []


def test_training_with_procedural_fluorescence_resumes_exactly(data: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(
        CONFIG, batch_size=4, fluorescence_fraction=0.5, fluorescence_pool=3, fluorescence_size=48
    )
    straight = Trainer(config, tmp_path / "straight", data=data)
    assert straight.fluorescence_per_batch == 2 and straight.sources["fluorescence_planes"] == 3
    straight.run()
    records = log_of(tmp_path / "straight")
    assert all(np.isfinite(r["total"]) for r in records)
    assert "val_fluorescence_psnr" in records[-1]
    halves = Trainer(config, tmp_path / "halves", data=data)
    halves.run(until=2)
    resumed = Trainer(config, tmp_path / "halves", data=data)
    resumed.run()
    expected = straight.net.state_dict()
    for key, value in resumed.net.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_procedural_pairs_join_the_batch_labelled_noise_at_their_severity() -> None:
    photos = torch.rand(2, 3, 16, 16)
    noisy, clean = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    severity = torch.tensor([0.25, 0.75])
    generator = torch.Generator().manual_seed(0)
    targets, batch = degrade_batch(photos, None, generator, fluorescence=(noisy, clean, severity))
    assert torch.equal(targets[2:], clean) and torch.equal(batch.degraded[2:], noisy)
    column = DEGRADATIONS.index("noise")
    assert batch.labels[2:].sum().item() == 2 and batch.labels[2:, column].tolist() == [1, 1]
    assert batch.severities[2:, column].tolist() == [0.25, 0.75]


def test_missing_data(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        data_root(tmp_path / "nowhere")
    with pytest.raises(InputError, match="no training photos"):
        training_paths(tmp_path, 2)


def test_patch_sampler_is_deterministic_and_resumable() -> None:
    rng = np.random.default_rng(1)
    images = ImageSet(
        [picture(rng) for _ in range(3)], [picture(rng, 1).repeat(3).reshape(64, 64, 3)]
    )
    a, b = PatchSampler(images, 16, 0.5, seed=3), PatchSampler(images, 16, 0.5, seed=3)
    photos, micro = a.sample(4)
    assert photos.shape == (2, 3, 16, 16) and micro.shape == (2, 3, 16, 16)
    assert photos.min() >= 0 and photos.max() <= 1
    assert torch.equal(photos, b.sample(4)[0])
    state = a.state()
    first = a.sample(4)
    a.set_state(state)
    assert torch.equal(a.sample(4)[0], first[0])


def log_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def weights_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.net.state_dict().items()}


@pytest.fixture(scope="module")
def run_a(data: Path, tmp_path_factory) -> Trainer:
    """Four steps in one go."""
    trainer = Trainer(CONFIG, tmp_path_factory.mktemp("run-a"), data=data)
    trainer.run()
    return trainer


def test_training_logs_finite_losses_and_validates(run_a: Trainer) -> None:
    log = log_of(run_a.out_dir)
    assert [record["step"] for record in log] == [1, 2, 3, 4]
    for record in log:
        for key in ("restore", "composition", "total", "lr"):
            assert np.isfinite(record[key]), key
    assert "degrade" not in log[0]  # the degradation weight starts at zero ...
    assert all(np.isfinite(record["degrade"]) for record in log[1:])  # ... then ramps up
    assert [("val_psnr" in record) for record in log] == [False, True, False, True]
    assert all(np.isfinite(r["val_psnr"]) for r in log if "val_psnr" in r)
    assert log[0]["lr"] == pytest.approx(CONFIG.lr)  # one warm-up step
    assert log[-1]["lr"] < log[1]["lr"]  # cosine decay


def test_training_runs_channels_last(run_a: Trainer) -> None:
    # oneDNN's bf16 convolutions, forward and backward, are about a third faster in that layout
    kernels = [p for p in run_a.net.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)


def test_checkpoint_is_small_pickle_free_shards(run_a: Trainer) -> None:
    folder = run_a.out_dir / "checkpoint"
    state = json.loads((folder / "state.json").read_text())
    assert state["step"] == 4
    assert state["config"] == dataclasses.asdict(CONFIG)
    files = sorted(p.name for p in folder.iterdir())
    assert files == sorted(["state.json", *state["shards"]])  # no partial files left
    for name in state["shards"]:
        assert name.endswith(".safetensors")
        assert (folder / name).stat().st_size <= 15 * 2**20


def test_resuming_is_exact(run_a: Trainer, data: Path, tmp_path: Path) -> None:
    first = Trainer(CONFIG, tmp_path, data=data)
    first.run(until=2)
    assert first.step == 2
    resumed = Trainer(CONFIG, tmp_path, data=data)
    assert resumed.step == 2
    resumed.run()
    assert resumed.step == 4
    expected = run_a.net.state_dict()
    for key, value in resumed.net.state_dict().items():
        assert torch.equal(value, expected[key]), key
    assert log_of(tmp_path) == log_of(run_a.out_dir)
    expected_moments = run_a.optimizer.state_dict()["state"]
    for index, moments in resumed.optimizer.state_dict()["state"].items():
        for name, value in moments.items():
            assert torch.equal(
                torch.as_tensor(value), torch.as_tensor(expected_moments[index][name])
            )


def test_same_seed_same_weights(run_a: Trainer, data: Path, tmp_path: Path) -> None:
    again = Trainer(CONFIG, tmp_path, data=data)
    again.run()
    expected = run_a.net.state_dict()
    for key, value in again.net.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # and the weights did move away from the seeded initialisation
    torch.manual_seed(CONFIG.seed)
    initial = build_network("tiny").state_dict()
    assert not torch.equal(initial["embed.weight"], expected["embed.weight"])


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")
def test_cpu_bf16_trains_in_bf16_and_stays_deterministic(data: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, cpu_bf16=True, steps=2)
    runs = [Trainer(config, tmp_path / name, data=data) for name in ("a", "b")]
    with runs[0]._amp():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
    for run in runs:
        run.run()
    assert all(np.isfinite(record["total"]) for record in log_of(tmp_path / "a"))
    assert log_of(tmp_path / "a") == log_of(tmp_path / "b")


def test_a_run_of_another_preset_is_not_resumed(run_a: Trainer, data: Path) -> None:
    other = dataclasses.replace(CONFIG, preset="small")
    with pytest.raises(InputError, match="holds a tiny run"):
        Trainer(other, run_a.out_dir, data=data)


def test_export_writes_a_loadable_model(run_a: Trainer, tmp_path: Path) -> None:
    path = run_a.export(tmp_path / "exported", name="exported", description="a test")
    assert path == tmp_path / "exported.safetensors"
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["name"] == "exported" and card["description"] == "a test"
    assert card["training"]["steps"] == 4
    assert card["training"]["config"]["preset"] == "tiny"
    assert card["training"]["sources"]["photos"] == 7
    assert np.isfinite(card["training"]["validation"]["val_psnr"])
    restorer = Restorer.from_pretrained(path, device="cpu")
    trained = run_a.net.state_dict()
    for key, value in restorer.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_training_config_files(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"preset": "tiny", "steps": 10, "lr": 5e-4}))
    config = TrainConfig.from_file(path, steps=20, batch_size=None)
    assert (config.preset, config.steps, config.lr, config.batch_size) == ("tiny", 20, 5e-4, 16)
    path.write_text(json.dumps({"preset": "tiny", "stpes": 10, "colour": 1}))
    with pytest.raises(InputError, match="unknown config keys colour, stpes"):
        TrainConfig.from_file(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read"):
        TrainConfig.from_file(path)
    with pytest.raises(InputError, match="cannot read"):
        TrainConfig.from_file(tmp_path / "absent.json")
    path.write_text(json.dumps({"preset": "tiny", "type_weights": {"blur": 2, "smog": 1}}))
    with pytest.raises(InputError, match="type_weights"):
        TrainConfig.from_file(path)


def test_type_weights_reach_every_part_of_a_batch() -> None:
    photos, micro = torch.rand(8, 3, 16, 16), torch.rand(4, 3, 16, 16)
    only_blur = {name: 1e-6 for name in DEGRADATIONS} | {"blur": 1e6}
    _, batch = degrade_batch(
        photos, micro, torch.Generator().manual_seed(0), 0.5, type_weights=only_blur
    )
    applied = batch.labels.sum(dim=1) > 0
    blur = batch.labels[:, DEGRADATIONS.index("blur")]
    assert applied.sum() >= 8 and (blur[applied] == 1).all()


def test_round_photos_rounds_the_photos_only() -> None:
    photos, micro = torch.rand(4, 3, 16, 16), torch.rand(2, 3, 16, 16)
    pairs = (torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    runs = [
        degrade_batch(photos, micro, torch.Generator().manual_seed(0), 0.5, pairs, None, flag)
        for flag in (False, True)
    ]
    (clean, plain), (clean_rounded, rounded) = runs
    assert torch.equal(clean, clean_rounded) and torch.equal(plain.labels, rounded.labels)
    assert torch.equal(rounded.degraded[:4], to_8_bits(plain.degraded[:4]))
    assert not torch.equal(plain.degraded[:4], rounded.degraded[:4])
    assert torch.equal(rounded.degraded[4:], plain.degraded[4:])  # microscopy, real pair


def test_round_photos_rounds_the_validation_set(data: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(CONFIG, round_photos=True, steps=1)
    _, degraded = Trainer(config, tmp_path, data=data).validation
    assert torch.equal(degraded, to_8_bits(degraded))


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.json")), ids=lambda p: p.name)
def test_shipped_configs_load(path: Path) -> None:
    config = TrainConfig.from_file(path)
    assert config.preset in PRESETS


def test_a_cycle_start_restarts_the_schedule() -> None:
    plain = TrainConfig(steps=1000, warmup_steps=100)
    later = dataclasses.replace(plain, steps=6000, cycle_start=5000)
    for step in (0, 50, 100, 550, 1000):
        assert later.learning_rate(5000 + step) == plain.learning_rate(step)


def test_schedules() -> None:
    config = TrainConfig(steps=1000, warmup_steps=100, lr=1e-3, min_lr=1e-5, degrade_warmup=200)
    assert config.learning_rate(0) == pytest.approx(1e-5)
    assert config.learning_rate(99) == pytest.approx(1e-3)
    assert config.learning_rate(100) == pytest.approx(1e-3)
    assert config.learning_rate(550) == pytest.approx((1e-3 + 1e-5) / 2)
    assert config.learning_rate(1000) == pytest.approx(1e-5)
    rates = [config.learning_rate(s) for s in range(100, 1001, 50)]
    assert rates == sorted(rates, reverse=True)
    assert config.degrade_weight_at(0) == 0
    assert config.degrade_weight_at(100) == pytest.approx(config.degrade_weight / 2)
    assert config.degrade_weight_at(5000) == config.degrade_weight


def test_shards_stay_under_the_limit() -> None:
    mib = 2**20
    tensors = {
        f"t{i}": torch.empty(size * mib // 4, device="meta")
        for i, size in enumerate([4, 4, 4, 4, 9, 1, 15, 2, 6, 6, 6])
    }
    shards = _shards(tensors)
    assert [k for shard in shards for k in shard] == list(tensors)  # all, in order
    for shard in shards:
        assert sum(t.numel() * t.element_size() for t in shard.values()) <= SHARD_BYTES
    sizes = [[t.numel() * 4 // mib for t in shard.values()] for shard in shards]
    assert sizes == [[4, 4, 4], [4, 9, 1], [15], [2, 6, 6], [6]]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_tensor_fits_in_one_shard(name: str) -> None:
    with torch.device("meta"):
        net = build_network(name)
    largest = max(p.numel() * p.element_size() for p in net.state_dict().values())
    assert largest <= SHARD_BYTES  # the optimiser moments have the same sizes


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(10.0), "b": torch.ones(3, 3, dtype=torch.int64)}
    save_checkpoint(tmp_path, tensors, {"step": 7})
    loaded, state = load_checkpoint(tmp_path)
    assert state == {"step": 7}
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert load_checkpoint(tmp_path / "none") is None


def test_an_interrupted_save_leaves_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint, "SHARD_BYTES", 64)  # one shard a tensor
    old = {f"t{i}": torch.full((16,), float(i)) for i in range(4)}
    save_checkpoint(tmp_path, old, {"step": 1})
    writes = []
    real_save_file = checkpoint.save_file

    def failing_save_file(tensors, path, *args, **kwargs):
        writes.append(path)
        if len(writes) == 3:
            raise KeyboardInterrupt  # killed in the middle of the save
        real_save_file(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", failing_save_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, {k: v + 100 for k, v in old.items()}, {"step": 2})
    loaded, state = load_checkpoint(tmp_path)
    assert state == {"step": 1}
    assert all(torch.equal(loaded[k], old[k]) for k in old)
    # the next complete save replaces it and removes every stale shard
    monkeypatch.setattr(checkpoint, "save_file", real_save_file)
    save_checkpoint(tmp_path, {"only": torch.ones(2)}, {"step": 3})
    shards = json.loads((tmp_path / "state.json").read_text())["shards"]
    assert sorted(p.name for p in tmp_path.glob("tensors-*")) == sorted(shards)
    assert load_checkpoint(tmp_path)[1] == {"step": 3}


def test_the_loss_decreases_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    net = build_network("tiny")
    generator = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(2)
    photos = torch.from_numpy(np.stack([picture(rng)[:32, :32] for _ in range(2)]))
    photos = photos.permute(0, 3, 1, 2).float() / 255
    clean, batch = degrade_batch(photos, None, generator)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3)
    history = []
    for _ in range(15):
        output = net(batch.degraded)
        terms = bidirectional_loss(net, output, clean, batch.degraded, batch.labels, 0.5, 0.1)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    assert set(history[0]) == {"restore", "degrade", "composition", "total"}
    for key in ("restore", "degrade", "total"):
        assert history[-1][key] < 0.8 * history[0][key], key
    with torch.no_grad():
        restored = net(batch.degraded).restored
    assert psnr(restored, clean).mean() > psnr(batch.degraded, clean).mean() - 1.0


def test_psnr() -> None:
    clean = torch.full((2, 3, 8, 8), 0.5)
    assert psnr(clean + 0.1, clean) == pytest.approx(torch.tensor([20.0, 20.0]), abs=1e-3)
    assert psnr(clean, clean).min() == pytest.approx(100.0)


def test_grey_patches_are_degraded_on_one_channel_then_replicated() -> None:
    from allinone.train.data import degrade_batch

    photos = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    micro = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    clean, batch = degrade_batch(photos, micro, torch.Generator().manual_seed(2), grey_fraction=0.5)
    grey = torch.cat([clean[:2], clean[4:]]), torch.cat([batch.degraded[:2], batch.degraded[4:]])
    for images in grey:
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])
    assert not torch.equal(clean[2:4, 0], clean[2:4, 1])
    assert batch.labels[4:, 3].sum() == 0  # microscopy never has rain


def test_cli_train_exports_with_a_description(data: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "tiny.json"
    settings = {k: v for k, v in dataclasses.asdict(CONFIG).items() if k != "steps"}
    config.write_text(json.dumps({**settings, "steps": 1}))
    export = tmp_path / "model"
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--data", str(data)]
    argv += ["--device", "cpu", "--export", str(export), "--description", "one step"]
    assert main(argv) == 0
    card = json.loads((tmp_path / "model.json").read_text())
    assert (card["name"], card["description"]) == ("model", "one step")
    assert card["training"]["steps"] == 1
    assert re.search(
        r"step=1 .*val_psnr=.* \([\d.e-]+ s/step, 0:00:00 left\)", capsys.readouterr().err
    )


def test_fit_steps_sets_the_schedule_to_the_time_left(data: Path, tmp_path: Path) -> None:
    trainer = Trainer(dataclasses.replace(CONFIG, steps=1000), tmp_path, data=data)
    left = trainer.fit_steps(seconds=3600.0, probe=2)
    assert trainer.step == 2 and 3500 < left < 3600
    assert trainer.config.cycle_start == 0 and trainer.config.steps > 100
    assert trainer.config.learning_rate(trainer.config.steps) == pytest.approx(CONFIG.min_lr)
    saved = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert saved["step"] == 2  # the probe ends in a checkpoint
    resumed = Trainer(CONFIG, tmp_path, data=data)
    resumed.fit_steps(seconds=0.0, probe=1)  # a warm restart at step 2, out of time at once
    assert (resumed.config.cycle_start, resumed.step, resumed.config.steps) == (2, 3, 3)
    assert resumed.config.learning_rate(2) == CONFIG.learning_rate(0)


def test_fit_steps_restarts_a_run_whose_steps_are_done(data: Path, tmp_path: Path) -> None:
    Trainer(dataclasses.replace(CONFIG, steps=2), tmp_path, data=data).run()
    resumed = Trainer(dataclasses.replace(CONFIG, steps=2), tmp_path, data=data)
    resumed.fit_steps(seconds=3600.0, probe=2)
    assert resumed.step == 4 and resumed.config.cycle_start == 2
    assert resumed.config.steps > 100  # paced by the probe's real steps


def test_fit_steps_needs_a_time_budget(data: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"preset": "tiny"}))
    argv = ["train", "--config", str(config), "--out", str(tmp_path), "--data", str(data)]
    assert main([*argv, "--fit-steps"]) != 0
    assert "--fit-steps needs --seconds" in capsys.readouterr().err


def test_training_pace_and_time_left() -> None:
    record = {"step": 200, "lr": 0.001}
    line = _TrainingPace(100, 1100, None).line(record, elapsed=50.0)
    assert line == "step=200 lr=0.001 (0.5 s/step, 0:07:30 left)"
    budget = _TrainingPace(100, 1100, seconds=120.0).line(record, elapsed=50.0)
    assert budget.endswith("(0.5 s/step, 0:01:10 left)")  # the budget ends first
    probing = _TrainingPace(100, 150, None).line(record, elapsed=50.0)
    assert probing.endswith("(0.5 s/step, 0:00:00 left)")  # past a last step not yet set


def test_retraining_the_composition_head_changes_only_the_head(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "head.safetensors"
    args = ["train-composition", "--model", "tiny", "--data", str(data), "--out", str(out)]
    assert main([*args, "--steps", "20", "--patch-size", "32"]) == 0
    before = Restorer.from_pretrained("tiny", device="cpu").state_dict()
    after = Restorer.from_pretrained(out, device="cpu")
    changed = {k for k, v in after.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("composition.") for k in changed)
    record = after.card.training["composition_head"]
    assert record["steps"] == 20 and record["patch_size"] == 32
    assert record["val_loss"] < record["val_loss_before"]
    assert 0.0 <= record["val_top1"] <= 1.0
    assert main([*args, "--steps", "1", "--patch-size", "32"]) == 2  # never replaced silently


def test_the_retrained_head_is_the_best_validated_one(data: Path, monkeypatch) -> None:
    seen = []

    def recording(net, x):
        seen.append(x)
        return head_inputs(net, x)

    monkeypatch.setattr(composition, "head_inputs", recording)
    photos, microscopy, validation = training_paths(data, 2)
    images = ImageSet(load_images(photos), load_images(microscopy))
    net = build_network("tiny").eval()
    crops = torch.from_numpy(np.stack(load_images(validation))).permute(0, 3, 1, 2)
    encoded = validation_set(net, crops.float() / 255)
    assert encoded.labels.shape == (2 * (18 + 3), len(DEGRADATIONS))
    assert int(encoded.single.sum()) == 36
    records = []
    config = HeadConfig(steps=6, patch_size=32, batch_size=4, validate_every=2, lr=0.05)
    result = train_head(net, images, encoded, config, records.append)
    validated = [r.val_loss for r in records if r.val_loss is not None]
    assert len(records) == 6 and len(validated) == 3
    assert result["val_loss"] == round(min([result["val_loss_before"], *validated]), 4)
    assert validate(net, encoded)[0] == pytest.approx(result["val_loss"], abs=1e-4)
    assert not any(p.requires_grad for p in net.parameters())
    assert len(seen) == 2 * (18 + 1) + 6  # each crop: 18 singles, 1 batch of mixtures; 6 steps
    assert all(torch.equal(x, to_8_bits(x)) for x in seen)  # read as 8-bit images are
