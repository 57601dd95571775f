"""Distributed training: `torchrun --nproc_per_node=2 -m allinone.cli train` on the CPU (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for folder, suffix, count in (("BSD432", "jpg", 2), ("DIV2K_val_crop256", "png", 2)):
        (tmp_path / folder / "clean").mkdir(parents=True)
        for n in range(count):
            pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / folder / "clean" / f"{n}.{suffix}")
    return tmp_path


def _torchrun(config: Path, out: Path, data: Path, steps: int) -> subprocess.CompletedProcess:
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "allinone.cli", "train", "--config", str(config), "--out", str(out)),
        *("--data", str(data), "--device", "cpu", "--steps", str(steps)),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _state(out: Path) -> dict:
    return json.loads((out / "checkpoint" / "state.json").read_text())


def test_two_process_training_and_resume(data_root, tmp_path):
    config = tmp_path / "tiny.json"
    settings = {
        "preset": "tiny",
        "batch_size": 2,
        "patch_size": 32,
        "warmup_steps": 1,
        "degrade_warmup": 1,
        "validation_images": 1,
        "validate_every": 1,
        "checkpoint_every": 1,
    }
    config.write_text(json.dumps(settings))
    out = tmp_path / "run"

    first = _torchrun(config, out, data_root, steps=2)
    assert first.stderr.count("training tiny from step 0 to step 2 on 2 processes") == 1
    assert _state(out)["step"] == 2
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all("val_psnr" in r for r in records)
    tensors = {}
    for shard in _state(out)["shards"]:
        tensors.update(load_file(out / "checkpoint" / shard))
    assert {"rng.sampler", "rng.sampler.rank1", "rng.synth.rank1"} <= set(tensors)
    assert not tensors["rng.sampler"].equal(tensors["rng.sampler.rank1"])

    _torchrun(config, out, data_root, steps=3)
    assert _state(out)["step"] == 3
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
