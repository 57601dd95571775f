"""Reliability, faults: a cancel at any moment leaves the viewer as it was; running out of device
memory goes on on the CPU and says so; a second run is refused, never interleaved; closing the
viewer stops its jobs; outputs and saved models survive a run killed while writing them.

Covered elsewhere, not repeated here:
- cancelling the engine's jobs: test_restorer::test_cancel_with_a_callable,
  test_restorer::test_cancel_with_an_event,
  test_finetune::test_cancel_stops_and_leaves_the_original_untouched; a real restore cancelled
  in the widget: test_napari_widgets::test_cancelled_restore_adds_no_layer
- out of memory in the engine (halved batches, smaller tiles, the CPU with a RuntimeWarning):
  test_streaming::test_out_of_memory_halves_the_batch_then_shrinks_tiles,
  test_streaming::test_out_of_memory_falls_back_to_the_cpu_with_a_warning,
  test_streaming::test_restorer_goes_on_on_the_cpu_then_returns_to_its_device
- the composition widget drops stale runs:
  test_napari_widgets::test_composition_follows_the_slice_once_settled
- removing a dock widget stops its job: test_napari_widgets::test_removing_the_widget_stops_its_job
- no overwriting without --overwrite, never the input:
  test_cli::test_existing_output_is_refused_before_loading,
  test_cli::test_output_same_as_input_is_refused, test_io::test_overwrite_refused_then_allowed;
  a failed or interrupted write leaves nothing: test_io::test_failed_write_leaves_no_partial_file,
  test_cli::test_interrupt_exits_130_without_output
- an interrupted training checkpoint: test_train (checkpoint tests)
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_restorer, open_widget, stand_in

from allinone.cli import common, main
from allinone.errors import InputError, ModelFileError
from allinone.infer.normalize import fit_normalization
from allinone.infer.restorer import Composition, Restorer
from allinone.io import read_image, write_image
from allinone.jobs import Progress
from allinone.models import PRESETS, Preset, build_network
from allinone.train.finetune import finetune
from allinone.types import DEGRADATIONS
from napari_allinone._workers import JobState


def _stand_in_of(value: int) -> int:
    """What `x * 0.5 - 0.25` (darker, so never held back as a brightening) makes of a constant
    grey uint8 plane at the default scaling."""
    norm = fit_normalization(np.full((4, 4), value, np.uint8))
    return int(norm.inverse(norm.forward(np.array([value])) * 0.5 - 0.25)[0])


_STAND_IN_OF_100 = _stand_in_of(100)

TIMEOUT_MS = 60_000
MOMENTS = ("load", "step", "finish")
"""Where a fake job waits: loading the model, between two steps, in its last step."""


def _cpu_only(x: torch.Tensor) -> torch.Tensor:
    """A stand-in tile pass that runs out of memory anywhere but on the CPU."""
    if x.device.type != "cpu":
        raise torch.cuda.OutOfMemoryError("simulated")
    return x * 0.5 - 0.25


def _full_device_restorer(monkeypatch: pytest.MonkeyPatch) -> Restorer:
    """A Restorer on a 'device' (meta) whose memory is always full."""
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    restorer.device = torch.device("meta")
    monkeypatch.setattr(restorer.net, "to", lambda device: restorer.net)
    stand_in(monkeypatch, restorer, _cpu_only)
    return restorer


# --- out of memory --------------------------------------------------------------------------------


def test_cli_says_it_goes_on_on_the_cpu(tmp_path: Path, capsys, monkeypatch) -> None:
    restorer = _full_device_restorer(monkeypatch)
    monkeypatch.setattr(common, "load_restorer", lambda args: restorer)
    source = write_image(tmp_path / "in.png", np.full((24, 24), 100, np.uint8))
    code = main(["restore", str(source), "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "warning: meta ran out of memory" in err and "going on on the CPU" in err
    assert np.all(read_image(tmp_path / "out.png").array == _STAND_IN_OF_100)


@pytest.mark.parametrize("val_fraction", [0.25, 0.0], ids=["validating", "training"])
def test_finetuning_out_of_memory_is_a_clear_error(val_fraction: float) -> None:
    restorer = Restorer.from_pretrained("tiny", device="cpu")
    restorer.net.forward = lambda x: _cpu_only(x.to("meta"))  # copied with the network
    pair = np.random.default_rng(0).random((2, 48, 48), dtype=np.float32)
    with pytest.raises(InputError, match="ran out of memory while fine-tuning; lower the batch"):
        finetune(restorer, [tuple(pair)], steps=1, patch_size=16, val_fraction=val_fraction)


# --- the widgets: cancelling, a second run, out of memory, closing --------------------------------


@pytest.fixture
def viewer(make_napari_viewer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ALLINONE_MODELS_DIR", str(tmp_path / "models"))
    return make_napari_viewer()


class FakeJob:
    """A job that stops at each of `MOMENTS` until the test opens it, then returns `result`."""

    def __init__(self, result: object) -> None:
        self.result = result
        self.arrived = {moment: threading.Event() for moment in MOMENTS}
        self.gates = {moment: threading.Event() for moment in MOMENTS}
        self.calls = 0

    def _wait(self, moment: str) -> None:
        self.arrived[moment].set()
        assert self.gates[moment].wait(30), f"the test never opened {moment}"

    def run(self, request: object) -> Generator[Progress, None, object]:
        """The job function (a generator, as the widgets' jobs are)."""
        self.calls += 1
        self._wait("load")
        yield Progress(0, 2, "")
        self._wait("step")
        yield Progress(1, 2, "")
        self._wait("finish")
        return self.result

    def open(self, *moments: str) -> None:
        """Let the job past `moments` (all of them when none is given)."""
        for moment in moments or MOMENTS:
            self.gates[moment].set()


Setup = tuple[Any, FakeJob, Callable[[], None], Callable[[], None]]
"""(widget, its fake job, start, cancel)."""


def _layers(viewer) -> list[tuple[str, bytes]]:
    """Every layer's name and data."""
    return [(layer.name, np.asarray(layer.data).tobytes()) for layer in viewer.layers]


def _restore_setup(viewer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """An image and the Restore widget running a `FakeJob`."""
    viewer.add_image(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64), name="image")
    job = FakeJob(np.zeros((64, 64), np.uint16))
    monkeypatch.setattr("napari_allinone._restore.restore_job", job.run)
    widget = open_widget(viewer, "Restore")
    return widget, job, widget.run_button.click, widget.run_button.click


def _composition_setup(viewer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """An image and the composition widget (adding maps) running a `FakeJob`."""
    viewer.add_image(np.random.default_rng(1).random((64, 64), dtype=np.float32), name="image")
    maps = np.zeros((len(DEGRADATIONS), 8, 8), np.float32)
    job = FakeJob(Composition(dict.fromkeys(DEGRADATIONS, 0.5), maps, (8.0, 8.0)))
    monkeypatch.setattr("napari_allinone._composition.analyze_job", job.run)
    widget = open_widget(viewer, "Degradation composition")
    widget.auto.setChecked(False)
    widget.add_maps.setChecked(True)
    return widget, job, widget.analyse, widget.analyse_button.click


def _finetune_setup(viewer, monkeypatch: pytest.MonkeyPatch) -> Setup:
    """A pair of images and the Fine-tune widget running a `FakeJob`; it cancels as closing it
    does (its button's Stop ends the run early and keeps the result)."""
    rng = np.random.default_rng(2)
    viewer.add_image(rng.random((64, 64), dtype=np.float32), name="clean")
    viewer.add_image(rng.random((64, 64), dtype=np.float32), name="noisy")
    job = FakeJob(SimpleNamespace(psnr_before=None, steps=1))
    monkeypatch.setattr("napari_allinone._finetune.finetune_job", job.run)
    widget = open_widget(viewer, "Fine-tune")
    widget.degraded.set_layer(viewer.layers["noisy"])
    widget.clean.set_layer(viewer.layers["clean"])
    return widget, job, widget.start_button.click, widget.job.cancel


SETUPS = {
    "restore": _restore_setup,
    "composition": _composition_setup,
    "finetune": _finetune_setup,
}


@pytest.mark.parametrize(
    ("which", "moment"),
    [("restore", m) for m in (*MOMENTS, "returned")]
    + [("composition", "finish"), ("finetune", "finish")],
)
def test_cancel_at_any_moment_leaves_the_viewer_as_it_was(
    viewer, qtbot, monkeypatch, notifications, which: str, moment: str
) -> None:
    widget, job, start, cancel = SETUPS[which](viewer, monkeypatch)
    before = _layers(viewer)
    start()
    assert widget.job.state is JobState.RUNNING
    if moment == "returned":  # the result is on its way to the GUI thread when Cancel comes
        assert job.arrived["load"].wait(30)
        job.open()
        worker = widget.job._worker
        while worker.is_running:  # no Qt events processed meanwhile: the result waits
            time.sleep(0.005)
    else:
        job.open(*MOMENTS[: MOMENTS.index(moment)])
        assert job.arrived[moment].wait(30)
    cancel()
    job.open()
    qtbot.waitUntil(lambda: widget.job.state is JobState.IDLE, timeout=TIMEOUT_MS)
    qtbot.wait(50)
    assert _layers(viewer) == before
    if which == "composition":  # quiet: it is also stopped by every newer request
        assert widget.probabilities == {}
    else:
        assert notifications[-1] == ("info", f"{widget.job.description}: cancelled.")
    if which == "finetune":
        assert widget.result is None and not widget.save_button.isEnabled()


def test_a_second_run_is_refused_while_one_is_going_on(
    viewer, qtbot, monkeypatch, notifications
) -> None:
    widget, job, start, _ = _restore_setup(viewer, monkeypatch)
    start()
    assert job.arrived["load"].wait(30)
    widget.run()  # e.g. from a script or a shortcut: the button itself now reads "Cancel"
    assert notifications[-1] == (
        "info",
        "Restoring: a run is still going on; cancel it or wait for it to end.",
    )
    for control in (widget.layer, widget.axes, widget.scope, widget.tile, widget.engine.model):
        assert not control.isEnabled()  # settings cannot change under a running job
    job.open()
    qtbot.waitUntil(lambda: widget.job.state is JobState.DONE, timeout=TIMEOUT_MS)
    assert job.calls == 1
    assert [layer.name for layer in viewer.layers] == ["image", "image [restored]"]

    tune, tune_job, tune_start, _ = _finetune_setup(viewer, monkeypatch)
    tune_start()
    assert tune_job.arrived["load"].wait(30)
    tune.start()
    assert "Fine-tuning: a run is still going on" in notifications[-1][1]
    assert not any(c.isEnabled() for c in (tune.degraded, tune.budget, tune.engine.model))
    tune_job.open()
    qtbot.waitUntil(lambda: tune.job.state is JobState.DONE, timeout=TIMEOUT_MS)
    assert tune_job.calls == 1


def test_widget_says_it_goes_on_on_the_cpu(viewer, qtbot, monkeypatch, notifications) -> None:
    restorer = _full_device_restorer(monkeypatch)
    monkeypatch.setattr("napari_allinone._workers.load_restorer", lambda *args: restorer)
    viewer.add_image(np.full((24, 24), 100, np.uint8), name="image")
    widget = open_widget(viewer, "Restore")
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.job.state is JobState.DONE, timeout=TIMEOUT_MS)
    warned = [message for severity, message in notifications if severity == "warning"]
    assert any("ran out of memory" in m and "going on on the CPU" in m for m in warned), warned
    assert np.all(viewer.layers["image [restored]"].data == _STAND_IN_OF_100)


def test_closing_the_viewer_stops_a_running_finetune(viewer, qtbot, notifications) -> None:
    rng = np.random.default_rng(3)
    viewer.add_image(rng.random((64, 64), dtype=np.float32), name="clean")
    viewer.add_image(rng.random((64, 64), dtype=np.float32), name="noisy")
    widget = open_widget(viewer, "Fine-tune")
    widget.degraded.set_layer(viewer.layers["noisy"])
    widget.clean.set_layer(viewer.layers["clean"])
    widget.budget.setValue(100_000)
    widget.start_button.click()
    qtbot.waitUntil(lambda: len(widget.plot.points["loss"]) >= 1, timeout=TIMEOUT_MS)
    worker = widget.job._worker
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=20_000)
    assert not [note for note in notifications if note[0] == "error"]


# --- files: outputs and saved models --------------------------------------------------------------


def test_a_symlink_to_the_input_is_never_overwritten(tmp_path: Path, capsys) -> None:
    source = write_image(tmp_path / "in.tif", np.ones((8, 8), np.uint16))
    before = source.read_bytes()
    (tmp_path / "out.tif").symlink_to(source)
    code = main(["restore", str(source), "-o", str(tmp_path / "out.tif"), "--overwrite"])
    assert code == 2 and "is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before


@pytest.mark.parametrize("failing", ["weights", "card"])
def test_a_failed_save_leaves_the_previous_model(
    tmp_path: Path, tiny_restorer, monkeypatch, failing: str
) -> None:
    weights = tiny_restorer.save(tmp_path / "mine")
    card = weights.with_suffix(".json")
    before = weights.read_bytes(), card.read_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "weights":
        monkeypatch.setattr("safetensors.torch.save_file", disk_full)
    else:
        monkeypatch.setattr(Path, "write_text", disk_full)
    with pytest.raises(ModelFileError, match="cannot save the model \\(No space left"):
        tiny_restorer.save(weights)
    assert (weights.read_bytes(), card.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.json", "mine.safetensors"]


def test_a_save_killed_between_its_renames_loads_the_new_model(
    tmp_path: Path, tiny_restorer
) -> None:
    """Killed after the new weights replaced the old ones, before the new card did: the stale
    card beside them is ignored for the one saved inside the weights."""
    old = tiny_restorer.save(tmp_path / "mine")
    wider = build_network(Preset.from_dict(PRESETS["tiny"].to_dict() | {"width": 16}))
    new = make_restorer(wider, "wider").save(tmp_path / "new" / "mine")
    os.replace(new, old)
    restorer = Restorer.from_pretrained(old, device="cpu")
    assert restorer.card.name == "wider" and restorer.net.preset.width == 16


STALL = """
import os, sys, time
import imageio.v3, safetensors.torch, tifffile
from allinone.cli import main

def stall(path):
    with open(path, "wb") as handle:
        handle.write(b"the first bytes of a file that never ends")
    time.sleep(600)  # the test kills the process here, in the middle of the write

def stall_file(target, *args, **kwargs):  # a path (TIFF laid out for a memory map) or a handle
    stall(target if isinstance(target, (str, os.PathLike)) else target.name)

tifffile.imwrite = imageio.v3.imwrite = stall_file
safetensors.torch.save_file = lambda tensors, path, **kwargs: stall(path)
sys.exit(main(sys.argv[1:]))
"""


def _kill_when(process: subprocess.Popen, appears: Callable[[], bool]) -> None:
    """SIGKILL `process` as soon as `appears()`."""
    deadline = time.monotonic() + 120
    while not appears():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the write never started"
        time.sleep(0.02)
    process.kill()
    process.wait()


def test_runs_killed_while_writing_leave_outputs_and_models_intact(
    tmp_path: Path, tiny_restorer
) -> None:
    rng = np.random.default_rng(4)
    pair = rng.integers(0, 255, (2, 64, 64), dtype=np.uint8)
    degraded = write_image(tmp_path / "degraded.png", pair[0])
    clean = write_image(tmp_path / "clean.png", pair[1])
    existing = write_image(tmp_path / "existing.png", pair[1])
    model = tiny_restorer.save(tmp_path / "mine")
    before = {path: path.read_bytes() for path in (existing, model, model.with_suffix(".json"))}
    tiny = ["--model", "tiny", "--device", "cpu"]
    runs = {
        "new": ["restore", degraded, "-o", tmp_path / "new.tif", *tiny],
        "existing": ["restore", degraded, "-o", existing, "--overwrite", *tiny],
        "model": ["finetune", "--input", degraded, "--target", clean, "-o", model,
                  "--overwrite", "--steps", "1", "--patch-size", "32", "--batch-size", "2", *tiny],
    }  # fmt: skip
    temporaries = {"new": ".new.tif.partial-*", "existing": ".existing.png.partial-*",
                   "model": ".mine.safetensors.*.partial"}  # fmt: skip
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", STALL, *map(str, argv)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, argv in runs.items()
    }
    for name, process in processes.items():
        _kill_when(process, lambda name=name: any(tmp_path.glob(temporaries[name])))

    assert not (tmp_path / "new.tif").exists()
    assert {path: path.read_bytes() for path in before} == before
    np.testing.assert_array_equal(read_image(existing).array, pair[1])
    reloaded = Restorer.from_pretrained(model, device="cpu")
    assert reloaded.card.name == tiny_restorer.card.name
    leftovers = {p.name for p in tmp_path.iterdir()} - {"degraded.png", "clean.png"}
    leftovers -= {p.name for p in before}
    assert leftovers and all(name.startswith(".") and "partial" in name for name in leftovers)
