"""`allinone batch`: many files on a dask.distributed cluster."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from allinone import batch
from allinone.batch import BatchOptions, plan_outputs, restorer_for, run_batch
from allinone.cli import main
from allinone.errors import InputError
from allinone.infer.options import RestoreOptions


@pytest.fixture
def files(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for n in range(3):
        path = tmp_path / f"image{n}.tif"
        tifffile.imwrite(path, rng.integers(0, 255, (40, 48), dtype=np.uint8))
        paths.append(path)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"II*\x00 not a TIFF after all")
    return [*paths[:2], broken, paths[2]]


def test_batch_reports_failures_and_skips_finished_files(files, tmp_path):
    outdir = tmp_path / "out"
    report = run_batch(files, outdir, BatchOptions(model="tiny"), workers=2, retries=1)
    assert sorted(p.name for p in report.written) == ["image0.tif", "image1.tif", "image2.tif"]
    assert [(source.name, "contains no image" in error) for source, error in report.failed] == [
        ("broken.tif", True)
    ]
    for path in report.written:
        restored = tifffile.imread(path)
        assert restored.shape == (40, 48) and restored.dtype == np.uint8
    stamps = {p: p.stat().st_mtime_ns for p in report.written}

    attempted = []
    again = run_batch(
        files,
        outdir,
        BatchOptions(model="tiny"),
        workers=1,
        retries=0,
        processes=False,
        on_done=lambda source, error: attempted.append(source.name),
    )
    assert attempted == ["broken.tif"]
    assert sorted(p.name for p in again.skipped) == ["image0.tif", "image1.tif", "image2.tif"]
    assert {p: p.stat().st_mtime_ns for p in again.skipped} == stamps


def test_plan_outputs_overwrite_and_name_clashes(files, tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "image0.tif").write_bytes(b"done")
    todo, skipped = plan_outputs(files, outdir)
    assert skipped == [outdir / "image0.tif"] and len(todo) == 3
    todo, skipped = plan_outputs(files, outdir, overwrite=True)
    assert not skipped and len(todo) == 4
    with pytest.raises(InputError, match="same folder|different folders"):
        plan_outputs([files[0], tmp_path / "other" / files[0].name], outdir)
    with pytest.raises(InputError, match="input"):
        plan_outputs(files, tmp_path)


def test_every_file_is_restored_with_the_batch_restore_options(files, tmp_path):
    options = RestoreOptions(tone=False, scene_haze=False, tile=16, overlap=8)
    output = tmp_path / "restored.tif"
    chosen = BatchOptions(model="tiny", device="cpu", restore=options)
    batch.restore_file(str(files[0]), str(output), chosen)
    expected = restorer_for("tiny", "cpu", "auto").restore(
        tifffile.imread(files[0]), options=options
    )
    np.testing.assert_array_equal(tifffile.imread(output), expected)


def test_restorer_is_loaded_once_per_model_and_device():
    assert restorer_for("tiny", "cpu", "auto") is restorer_for("tiny", "cpu", "auto")
    assert batch.worker_device("cpu") == "cpu"


def test_cli_batch(files, tmp_path, monkeypatch, capsys):
    run = batch.run_batch
    monkeypatch.setattr(batch, "run_batch", lambda *args, **kw: run(*args, **kw, processes=False))
    status = main(["batch", *map(str, files[1:3]), "-o", str(tmp_path / "cli"), "--model", "tiny"])
    assert status == 1
    err = capsys.readouterr().err
    assert "1 restored, 0 skipped, 1 failed" in err
    assert "failed" in err and "broken.tif" in err


def _malloc_trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_workers_keep_the_adaptive_malloc():
    with batch.cluster_client(None, workers=1) as client:
        thresholds = list(client.run(_malloc_trim_threshold).values())
    assert thresholds == [None]
