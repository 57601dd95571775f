"""The napari dock widgets, opened through the manifest, driving the engine with the tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from allinone.types import DEGRADATIONS
from napari_allinone._workers import JobState

PLUGIN = "napari-allinone"
TIMEOUT_MS = 120_000


@pytest.fixture
def models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private user model folder, so tests never touch the real one."""
    folder = tmp_path / "models"
    monkeypatch.setenv("ALLINONE_MODELS_DIR", str(folder))
    return folder


@pytest.fixture
def viewer(make_napari_viewer, models_dir: Path):
    return make_napari_viewer()


def _open(viewer, name: str):
    """Open a widget through the manifest, set to the tiny model on the CPU."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert widget.engine.model.select("tiny")
    widget.engine.set_device("cpu")
    return widget


def _wait_for(qtbot, widget, *states: JobState) -> None:
    qtbot.waitUntil(lambda: widget.job.state in states, timeout=TIMEOUT_MS)


def test_restore_2d_image_keeps_source_and_placement(viewer, qtbot) -> None:
    data = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    source = viewer.add_image(data.copy(), name="cells", scale=(2, 3), translate=(5, 7))
    source.metadata["origin"] = "test"
    widget = _open(viewer, "Restore")
    assert widget.axes.text() == "YX"

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    assert widget.job.state is JobState.DONE
    out = viewer.layers["cells [restored]"]
    assert out.data.shape == data.shape and out.data.dtype == data.dtype
    np.testing.assert_array_equal(out.scale, (2, 3))
    np.testing.assert_array_equal(out.translate, (5, 7))
    assert out.metadata["origin"] == "test" and out.metadata["allinone"]["source"] == "cells"
    np.testing.assert_array_equal(source.data, data)


def test_restore_after_learning_the_noise(viewer, qtbot) -> None:
    data = np.random.default_rng(3).poisson(20.0, (48, 48)).astype(np.uint16)
    viewer.add_image(data, name="counts")
    widget = _open(viewer, "Restore")
    widget.learn_noise.setValue(1)

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    assert widget.job.state is JobState.DONE
    out = viewer.layers["counts [restored]"]
    assert out.data.shape == data.shape and out.data.dtype == data.dtype
    assert out.metadata["allinone"]["learnt_noise_seconds"] == 1


def test_learning_the_noise_of_a_stack_trains_on_it_and_shows_progress(
    viewer, qtbot, monkeypatch
) -> None:
    data = np.random.default_rng(4).poisson(20.0, (3, 48, 48)).astype(np.uint16)
    viewer.add_image(data, name="stack", scale=(3, 1, 1))
    widget = _open(viewer, "Restore")
    widget.learn_noise.setValue(1)
    messages = []
    advance = widget.job._advance_bar
    monkeypatch.setattr(
        widget.job, "_advance_bar", lambda step: (messages.append(step.message), advance(step))
    )

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    assert widget.job.state is JobState.DONE
    out = viewer.layers["stack [restored]"]
    assert out.data.shape == data.shape and out.data.dtype == data.dtype
    np.testing.assert_array_equal(out.scale, (3, 1, 1))
    assert "fine-tuning" in messages and messages[-1] != "fine-tuning"  # then the restore


@pytest.mark.parametrize("scaling", ["percentile", "range"])
def test_the_intensities_choice_reaches_the_engine(viewer, qtbot, scaling: str) -> None:
    from allinone import Restorer

    data = np.random.default_rng(2).poisson(6.0, (48, 48)).astype(np.uint8)
    viewer.add_image(data, name="dim")
    widget = _open(viewer, "Restore")
    picker = widget.engine.scaling
    picker.setCurrentIndex(picker.findData(scaling))
    assert widget.settings.engine.scaling == widget.settings.options.scaling == scaling

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    expected = Restorer.from_pretrained("tiny", device="cpu").restore(data, scaling=scaling)
    np.testing.assert_array_equal(viewer.layers["dim [restored]"].data, expected)


def test_the_best_quality_choice_reaches_the_engine(viewer, qtbot) -> None:
    from allinone import Restorer

    data = np.random.default_rng(4).integers(0, 255, (40, 56), dtype=np.uint8)
    viewer.add_image(data, name="photo")
    widget = _open(viewer, "Restore")
    widget.ensemble.setChecked(True)
    assert widget.settings.options.ensemble

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    expected = Restorer.from_pretrained("tiny", device="cpu").restore(data, ensemble=True)
    np.testing.assert_array_equal(viewer.layers["photo [restored]"].data, expected)


@pytest.mark.usefixtures("sure_of_haze")
def test_the_scene_haze_choice_reaches_the_engine(viewer, qtbot) -> None:
    from allinone import Restorer

    data = np.random.default_rng(4).integers(0, 255, (144, 160, 3), dtype=np.uint8)
    viewer.add_image(data, name="hazy", rgb=True)
    widget = _open(viewer, "Restore")
    assert widget.scene_haze.isChecked() and widget.settings.options.scene_haze
    widget.scene_haze.setChecked(False)
    assert not widget.settings.options.scene_haze

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    restorer = Restorer.from_pretrained("tiny", device="cpu")
    expected = restorer.restore(data, scene_haze=False)
    np.testing.assert_array_equal(viewer.layers["hazy [restored]"].data, expected)
    assert not np.array_equal(expected, restorer.restore(data))


def test_the_float_output_choice_gives_a_float_layer(viewer, qtbot) -> None:
    from allinone import Restorer

    data = np.random.default_rng(4).integers(100, 110, (40, 56), dtype=np.uint16)
    viewer.add_image(data, name="dim")
    widget = _open(viewer, "Restore")
    assert not widget.float_output.isChecked()
    widget.float_output.setChecked(True)
    assert widget.settings.options.float_output

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    result = viewer.layers["dim [restored]"].data
    assert result.dtype == np.float32
    expected = Restorer.from_pretrained("tiny", device="cpu").restore(
        data, options=widget.settings.options
    )
    np.testing.assert_array_equal(result, expected)


def test_restore_stack_whole_layer_and_current_slice(viewer, qtbot) -> None:
    data = np.random.default_rng(1).integers(0, 4000, (3, 64, 64), dtype=np.uint16)
    viewer.add_image(data, name="stack", scale=(4, 1, 1))
    widget = _open(viewer, "Restore")
    assert widget.axes.text() == "ZYX"

    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)
    assert viewer.layers["stack [restored]"].data.shape == (3, 64, 64)

    viewer.dims.set_current_step(0, 2)
    widget.scope.setCurrentText("current slice")
    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)
    plane = viewer.layers["stack [restored] [1]"]
    assert plane.data.shape == (64, 64) and plane.data.dtype == np.uint16


def test_invalid_axes_disable_run(viewer) -> None:
    viewer.add_image(np.zeros((2, 64, 64), dtype=np.float32), name="stack")
    widget = _open(viewer, "Restore")
    widget.axes.setText("ZZX")
    assert not widget.run_button.isEnabled() and widget.axes_message.text()
    widget.axes.setText("zyx")
    assert widget.run_button.isEnabled() and widget.settings.axes == "ZYX"


def test_cancelled_restore_adds_no_layer(viewer, qtbot) -> None:
    viewer.add_image(np.zeros((20, 64, 64), dtype=np.float32), name="stack")
    widget = _open(viewer, "Restore")
    widget.tile.setValue(32)

    widget.run_button.click()
    assert widget.run_button.text() == "Cancel"
    widget.run_button.click()
    assert widget.job.state is JobState.CANCELLING
    _wait_for(qtbot, widget, JobState.IDLE)

    qtbot.wait(100)
    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert widget.run_button.text() == "Run" and widget.run_button.isEnabled()


def test_removing_the_widget_stops_its_job(viewer, qtbot) -> None:
    viewer.add_image(np.zeros((20, 64, 64), dtype=np.float32), name="stack")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Restore")
    widget.engine.model.select("tiny")
    widget.tile.setValue(32)
    widget.run_button.click()
    viewer.window.remove_dock_widget(dock)
    assert not widget.job.state.busy
    qtbot.wait(300)
    assert len(viewer.layers) == 1


def test_composition_values_and_maps(viewer, qtbot) -> None:
    image = viewer.add_image(np.random.default_rng(2).random((64, 64), dtype=np.float32))
    widget = _open(viewer, "Degradation composition")
    widget.add_maps.setChecked(True)
    qtbot.waitUntil(lambda: len(widget.probabilities) == 6, timeout=TIMEOUT_MS)
    _wait_for(qtbot, widget, JobState.DONE)

    assert set(widget.probabilities) == set(DEGRADATIONS)
    assert all(0.0 <= p <= 1.0 for p in widget.probabilities.values())
    assert widget.chart.values == widget.probabilities
    assert widget.noise.text().startswith("Noise level: σ ")
    assert "Exposure" not in widget.noise.text()  # judged for 8-bit colour photos only
    maps = [layer for layer in viewer.layers if "map]" in layer.name]
    assert len(maps) == 6
    assert maps[0].data.ndim == 2
    assert image.data.shape == (64, 64)


def _settled_composition(viewer, qtbot, monkeypatch):
    """The Composition widget after its first analysis, and the list of the jobs it starts next."""
    widget = _open(viewer, "Degradation composition")
    qtbot.waitUntil(lambda: len(widget.probabilities) == 6, timeout=TIMEOUT_MS)
    _wait_for(qtbot, widget, JobState.DONE)
    requests = []
    start = widget.job.start
    monkeypatch.setattr(widget.job, "start", lambda *a, **k: requests.append(a) or start(*a, **k))
    return widget, requests


def test_composition_follows_the_slice_once_settled(viewer, qtbot, monkeypatch) -> None:
    viewer.add_image(np.random.default_rng(6).random((3, 64, 64), dtype=np.float32))
    widget, requests = _settled_composition(viewer, qtbot, monkeypatch)

    for z in (1, 2, 0, 1):
        viewer.dims.set_current_step(0, z)
    qtbot.waitUntil(lambda: len(requests) == 1, timeout=5_000)
    _wait_for(qtbot, widget, JobState.DONE)
    assert len(requests) == 1 and requests[0][1].data.shape == (64, 64)


def test_composition_flips_can_be_turned_off(viewer, qtbot, monkeypatch) -> None:
    viewer.add_image(np.random.default_rng(7).random((64, 64), dtype=np.float32))
    widget, requests = _settled_composition(viewer, qtbot, monkeypatch)
    averaged = dict(widget.probabilities)

    widget.flips.setChecked(False)
    qtbot.waitUntil(lambda: len(requests) == 1, timeout=5_000)
    _wait_for(qtbot, widget, JobState.DONE)
    assert requests[0][1].flips is False and widget.settings.flips is False
    assert widget.probabilities != averaged  # one pass differs from the mean of four


def test_composition_inside_a_rectangle(viewer, qtbot) -> None:
    viewer.add_image(np.random.default_rng(3).random((64, 64), dtype=np.float32), name="img")
    shapes = viewer.add_shapes([[[8, 8], [8, 40], [40, 40], [40, 8]]], shape_type="rectangle")
    widget = _open(viewer, "Degradation composition")
    widget.layer.set_layer(viewer.layers["img"])
    widget.shapes.set_layer(shapes)
    widget.scope.setCurrentText("rectangle")
    qtbot.waitUntil(lambda: len(widget.probabilities) == 6, timeout=TIMEOUT_MS)
    assert widget._region().data.shape == (32, 32)


def _finetune_widget(viewer, budget: int):
    """A Fine-tune widget set up on a noisy/clean pair of 64 x 64 layers."""
    rng = np.random.default_rng(4)
    clean = rng.random((64, 64), dtype=np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    viewer.add_image(clean, name="clean")
    viewer.add_image(noisy, name="noisy")
    widget = _open(viewer, "Fine-tune")
    widget.degraded.set_layer(viewer.layers["noisy"])
    widget.clean.set_layer(viewer.layers["clean"])
    widget.budget.setValue(budget)
    return widget


def test_finetune_then_model_is_listed_for_restore(viewer, qtbot, models_dir: Path) -> None:
    restore = _open(viewer, "Restore")
    widget = _finetune_widget(viewer, budget=2)

    widget.start_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    assert widget.job.state is JobState.DONE, widget.summary.text()
    assert "PSNR before" in widget.summary.text()
    widget.name.setText("my-tuned")
    assert widget.save_button.isEnabled()
    widget.save_button.click()
    assert (models_dir / "my-tuned.safetensors").is_file()
    assert any(label.startswith("my-tuned") for label in restore.engine.model.labels())


def test_finetune_stop_keeps_the_best_weights(viewer, qtbot, models_dir: Path) -> None:
    widget = _finetune_widget(viewer, budget=10_000)

    widget.start_button.click()
    qtbot.waitUntil(lambda: len(widget.plot.points["loss"]) >= 1, timeout=120_000)
    widget.start_button.click()
    assert widget.start_button.text() == "Finishing…"
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    assert widget.job.state is JobState.DONE, widget.summary.text()
    assert widget.result is not None and widget.result.steps < 10_000
    assert "PSNR before" in widget.summary.text()
    assert widget.save_button.isEnabled() is bool(widget.name.text().strip())


def test_finetune_on_a_noisy_layer_alone(viewer, qtbot, models_dir: Path) -> None:
    """With no clean layer chosen (the default), the run learns from the layer's noise."""
    noisy = np.random.default_rng(6).normal(0.5, 0.1, (64, 64)).astype(np.float32)
    viewer.add_image(noisy, name="noisy")
    widget = _open(viewer, "Fine-tune")
    widget.budget.setValue(2)
    assert widget.clean.layer() is None and widget.start_button.isEnabled()

    widget.start_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    assert widget.job.state is JobState.DONE, widget.summary.text()
    assert widget.result.self_supervised
    assert "self-supervised" in widget.summary.text()


def test_finetune_rejects_layers_of_different_shapes(viewer, monkeypatch) -> None:
    errors = []
    monkeypatch.setattr("napari_allinone._finetune.show_error", errors.append)
    viewer.add_image(np.zeros((64, 64), dtype=np.float32), name="clean")
    viewer.add_image(np.zeros((32, 64), dtype=np.float32), name="noisy")
    widget = _open(viewer, "Fine-tune")
    widget.degraded.set_layer(viewer.layers["noisy"])
    widget.clean.set_layer(viewer.layers["clean"])
    widget.start_button.click()
    assert widget.job.state is JobState.IDLE
    assert errors and "must match" in errors[0]


def test_restore_dask_backed_layer(viewer, qtbot) -> None:
    import dask.array as da

    data = da.from_array(
        np.random.default_rng(5).random((2, 64, 64), dtype=np.float32), chunks=(1, 64, 64)
    )
    viewer.add_image(data, name="lazy")
    widget = _open(viewer, "Restore")
    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)
    assert viewer.layers["lazy [restored]"].data.shape == (2, 64, 64)


def test_restore_into_an_ome_zarr_store_opens_lazily_with_the_layers_scale(
    viewer, qtbot, tmp_path: Path
) -> None:
    import dask.array as da
    import zarr

    from allinone.io import read_image

    data = da.from_array(
        np.random.default_rng(6).integers(0, 4000, (3, 64, 64), dtype=np.uint16), chunks=(1, 64, 64)
    )
    viewer.add_image(data, name="big", scale=(2.0, 0.5, 0.5))
    widget = _open(viewer, "Restore")
    store = tmp_path / "big-restored.ome.zarr"
    widget.store.setText(str(store))
    widget.run_button.click()
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)

    out = viewer.layers["big [restored]"]
    assert isinstance(out.data, zarr.Array) and out.data.shape == (3, 64, 64)
    assert out.data.dtype == np.uint16
    np.testing.assert_array_equal(out.scale, (2.0, 0.5, 0.5))
    on_disk = read_image(store)
    assert on_disk.axes == "ZYX" and on_disk.metadata["ngff"]["scale"] == [2.0, 0.5, 0.5]

    widget.run_button.click()  # the store exists now: refused, nothing replaced
    _wait_for(qtbot, widget, JobState.DONE, JobState.FAILED)
    assert widget.job.state is JobState.FAILED
    assert len([layer for layer in viewer.layers if "[restored]" in layer.name]) == 1


def test_model_picker_keeps_files_loaded_by_hand(viewer, tmp_path: Path) -> None:
    from napari_allinone._models import models_changed

    widget = _open(viewer, "Restore")
    picker = widget.engine.model
    assert "tiny (preset)" in picker.labels()
    weights = str(tmp_path / "mine.safetensors")
    picker.add_file(weights)
    assert picker.value() == weights and widget.settings.engine.model == weights
    models_changed.emit()
    assert picker.value() == weights and "mine (file)" in picker.labels()
