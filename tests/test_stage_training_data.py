"""scripts/stage_training_data.py: the training files, within a budget, never the test sets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stage_training_data.py"
spec = importlib.util.spec_from_file_location("stage_training_data", SCRIPT)
staging = importlib.util.module_from_spec(spec)
spec.loader.exec_module(staging)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A shared-data folder of files of known sizes (their contents do not matter here)."""
    root = tmp_path / "data"
    files = {
        "BSD432/clean": [f"{i}.jpg" for i in range(6)],
        "DIV2K_val_crop256/clean": [f"08{i:02d}.png" for i in range(10)],
        "FMD_Confocal_BPAE_B/target": ["fov02.png", "fov07.png", "fov08.png"],
        "FMD_Confocal_BPAE_B/input": ["fov02.png", "fov07.png"],
        "CBSD68/clean": ["0.png"],
    }
    rng = np.random.default_rng(0)
    for folder, names in files.items():
        (root / folder).mkdir(parents=True)
        for name in names:
            (root / folder / name).write_bytes(rng.bytes(1000))
    return root


def staged(dest: Path) -> set[str]:
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}


def test_everything_fits_in_a_large_budget(data: Path, tmp_path: Path) -> None:
    dest = tmp_path / "staged"
    files, bsd = staging.stage(data, dest, budget=10**6, part=0)
    assert bsd == 6 and len(files) == 6 + 10 + 2 + 1
    names = staged(dest)
    assert "BSD432/clean/5.jpg" in names and "DIV2K_val_crop256/clean/0809.png" in names
    assert "FMD_Confocal_BPAE_B/input/fov07.png" in names
    assert not any(n.startswith("CBSD68") or "fov02" in n for n in names)  # test sets stay out


def test_a_small_budget_takes_windows_of_the_photos(data: Path, tmp_path: Path) -> None:
    budget = (10 + 2 + 1) * 1000 + 2500  # the required files and room for two photos
    first, _ = staging.stage(data, tmp_path / "a", budget, part=0)
    second, _ = staging.stage(data, tmp_path / "b", budget, part=1)
    wrapped, _ = staging.stage(data, tmp_path / "c", budget, part=3)
    assert [p.name for p in first if p.suffix == ".jpg"] == ["0.jpg", "1.jpg"]
    assert [p.name for p in second if p.suffix == ".jpg"] == ["2.jpg", "3.jpg"]
    assert [p.name for p in wrapped if p.suffix == ".jpg"] == ["0.jpg", "1.jpg"]
    assert len(staged(tmp_path / "a")) == 2 + 13 + 1  # with the marker


def test_restaging_replaces_only_its_own_folder(data: Path, tmp_path: Path) -> None:
    dest = tmp_path / "staged"
    staging.stage(data, dest, budget=10**6, part=0)
    (dest / "stale.png").write_bytes(b"")
    staging.stage(data, dest, budget=10**6, part=0)
    assert not (dest / "stale.png").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.tif").write_bytes(b"data")
    with pytest.raises(SystemExit, match="not staged by this script"):
        staging.stage(data, mine, budget=10**6, part=0)
    assert (mine / "precious.tif").read_bytes() == b"data"
    with pytest.raises(SystemExit, match="does not hold even the required files"):
        staging.stage(data, tmp_path / "tiny", budget=100, part=0)
