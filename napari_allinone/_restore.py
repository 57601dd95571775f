"""Restore dock widget: run the all-in-one restorer on an image layer."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from napari.layers import Image
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
)

from allinone.infer.options import RestoreOptions
from napari_allinone._controls import EnginePicker, JobWidget, LayerCombo
from napari_allinone._layers import (
    Region,
    axes_problem,
    displayed_plane,
    guess_layer_axes,
    layer_data,
    output_properties,
    whole_layer,
)
from napari_allinone._workers import EngineChoice, JobState, RestoreRequest, restore_job

if TYPE_CHECKING:
    import numpy as np
    from napari.viewer import Viewer

Scope = Literal["current slice", "whole layer"]
SCOPES: tuple[Scope, ...] = ("current slice", "whole layer")


@dataclass
class RestoreSettings:
    """What the Restore widget edits."""

    engine: EngineChoice = field(default_factory=EngineChoice)
    axes: str = ""
    scope: Scope = "whole layer"
    options: RestoreOptions = field(default_factory=RestoreOptions)
    """The restore chain's switches and tiling; its scaling follows `engine`'s."""
    learn_noise: int = 0
    """Seconds of self-supervised fine-tuning on the image first; 0 for none."""
    store: str = ""
    """An OME-Zarr folder (*.zarr) to restore into, for layers larger than memory; "": memory."""


@dataclass(frozen=True)
class _Output:
    """Where a finished restore goes: captured when the run starts."""

    source: Image
    region: Region
    scope: Scope
    model: str
    learn_noise: int


class RestoreWidget(JobWidget):
    """Restore an Image layer into a new layer `<name> [restored]`."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(napari_viewer, "Restoring")
        self.settings = RestoreSettings()
        self.layer = LayerCombo(napari_viewer, Image)
        self.axes = QLineEdit(placeholderText="e.g. ZYX, YXC, TZYX")
        self.axes_message = QLabel(wordWrap=True)
        self.axes_message.setStyleSheet("color: #e3b617")
        self.scope = QComboBox()
        self.scope.addItems(SCOPES)
        self.scope.setCurrentText(self.settings.scope)
        self.engine = EnginePicker()
        self.tile = QSpinBox(minimum=0, maximum=4096, singleStep=32, specialValueText="auto")
        self.tile.setToolTip("Tile size in pixels; auto picks one that fits the device memory.")
        self.overlap = QSpinBox(minimum=0, maximum=512, singleStep=8, value=32)
        self.ensemble = QCheckBox("8 views (flips, rotations): better, 8x slower")
        self.float_output = QCheckBox("Float32 result for integer images")
        self.float_output.setToolTip(
            "The restoration unrounded instead of rounded to the layer's integer dtype: keeps "
            "detail where the signal spans few grey levels (a dim 12- or 16-bit plane)."
        )
        self.scene_haze = QCheckBox("Remove haze seen at scene scale first", checked=True)
        self.scene_haze.setToolTip(
            "Colour images: haze is judged and removed on a small overview of each plane before "
            "the tiles are restored; seen tile by tile, the haze of a large photo looks like blur."
        )
        self.learn_noise = QSpinBox(
            minimum=0, maximum=3600, singleStep=30, suffix=" s", specialValueText="off"
        )
        self.learn_noise.setToolTip(
            "First fine-tune a copy of the model on this image's own noise for this long "
            "(self-supervised; the model itself is unchanged). For noise independent from pixel "
            "to pixel, such as a microscope's photon and read noise; a minute or two is plenty."
        )
        self.store = QLineEdit(placeholderText="memory (or a new .ome.zarr folder)")
        self.store.setToolTip(
            "Leave empty to keep the result in memory. For a layer larger than memory, give a new "
            "folder ending in .ome.zarr: the result is written there tile by tile (with the "
            "layer's scale and a pyramid) and opened lazily."
        )
        self.browse = QToolButton(text="…", toolTip="Choose a new .ome.zarr folder")
        self.run_button = QPushButton("Run")
        self.status = QLabel(wordWrap=True)
        self._layout()
        self._connect()
        self._layer_changed(self.layer.layer())
        self._state_changed(JobState.IDLE)

    def _layout(self) -> None:
        form = QFormLayout(self)
        form.addRow("Image", self.layer)
        form.addRow("Axes", self.axes)
        form.addRow(self.axes_message)
        form.addRow("Apply to", self.scope)
        self.engine.add_rows(form)
        form.addRow("Tile size", self.tile)
        form.addRow("Overlap", self.overlap)
        form.addRow("Best quality", self.ensemble)
        form.addRow("Scene haze", self.scene_haze)
        form.addRow("Precision of the result", self.float_output)
        form.addRow("Learn the noise first", self.learn_noise)
        store = QHBoxLayout()
        store.addWidget(self.store)
        store.addWidget(self.browse)
        form.addRow("Result in", store)
        form.addRow(self.run_button)
        form.addRow(self.status)

    def _connect(self) -> None:
        self.layer.layer_changed.connect(self._layer_changed)
        self.axes.textChanged.connect(self._axes_edited)
        self.scope.currentTextChanged.connect(lambda text: self._update(scope=text))
        self.engine.on_change(self._engine_changed)
        self.tile.valueChanged.connect(lambda value: self._update_options(tile=value or None))
        self.overlap.valueChanged.connect(lambda value: self._update_options(overlap=value))
        self.ensemble.toggled.connect(lambda checked: self._update_options(ensemble=checked))
        self.scene_haze.toggled.connect(lambda checked: self._update_options(scene_haze=checked))
        self.float_output.toggled.connect(
            lambda checked: self._update_options(float_output=checked)
        )
        self.learn_noise.valueChanged.connect(lambda value: self._update(learn_noise=value))
        self.store.textChanged.connect(lambda text: self._update(store=text.strip()))
        self.browse.clicked.connect(self._browse_store)
        self.run_button.clicked.connect(self._run_clicked)
        self._engine_changed()

    def _update(self, **changes: object) -> None:
        for name, value in changes.items():
            setattr(self.settings, name, value)
        self._state_changed(self.job.state)

    def _update_options(self, **changes: object) -> None:
        self._update(options=replace(self.settings.options, **changes))

    def _engine_changed(self) -> None:
        engine = self.engine.choice()
        self._update(engine=engine, options=replace(self.settings.options, scaling=engine.scaling))

    def _layer_changed(self, layer: Image | None) -> None:
        from allinone.errors import AllInOneError

        try:
            axes = guess_layer_axes(layer) if layer is not None else ""
        except AllInOneError:
            axes = ""
        self.axes.setText(axes)
        self._axes_edited(axes)

    def _axes_edited(self, text: str) -> None:
        self.settings.axes = text.strip().upper()
        problem = self._axes_problem()
        self.axes_message.setText(problem or "")
        self.axes_message.setVisible(problem is not None)
        self._state_changed(self.job.state)

    def _axes_problem(self) -> str | None:
        layer = self.layer.layer()
        if layer is None:
            return None
        return axes_problem(self.settings.axes, tuple(layer_data(layer).shape))

    def _state_changed(self, state: JobState) -> None:
        busy = state.busy
        controls = (self.layer, self.axes, self.scope, self.tile, self.overlap)
        toggles = (self.ensemble, self.scene_haze, self.learn_noise, self.store, self.browse)
        for control in (*controls, *toggles):
            control.setEnabled(not busy)
        self.engine.set_enabled(not busy)
        ready = self.layer.layer() is not None and self._axes_problem() is None
        self.run_button.setText(
            {JobState.RUNNING: "Cancel", JobState.CANCELLING: "Cancelling…"}.get(state, "Run")
        )
        self.run_button.setEnabled(state is JobState.RUNNING or (not busy and ready))
        self.status.setText(
            {
                JobState.RUNNING: "Restoring…",
                JobState.CANCELLING: "Stopping after the current batch…",
                JobState.DONE: "Done.",
                JobState.FAILED: "Failed: see the notification.",
            }.get(state, "")
        )

    def _browse_store(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Restore into an OME-Zarr folder", "", "OME-Zarr (*.ome.zarr *.zarr)"
        )
        if path:
            self.store.setText(path if path.endswith(".zarr") else f"{path}.ome.zarr")

    def _run_clicked(self) -> None:
        if self.job.state is JobState.RUNNING:
            self.job.cancel()
        else:
            self.run()

    def run(self) -> None:
        """Start restoring the chosen layer with the current settings (refused while a run is
        going on)."""
        source = self.layer.layer()
        if source is None or self._axes_problem() is not None or self._already_running():
            return
        settings = self.settings
        if settings.scope == "current slice":
            region = displayed_plane(source, self.viewer)
        else:
            region = whole_layer(source, settings.axes)
        request = RestoreRequest(
            data=region.data,
            axes=region.axes,
            engine=settings.engine,
            options=settings.options,
            learn_noise=settings.learn_noise,
            store=settings.store or None,
            scale=region.scale,
        )
        output = _Output(
            source, region, settings.scope, settings.engine.model, settings.learn_noise
        )
        self.job.start(restore_job, request, on_result=lambda data: self._add_layer(output, data))

    def _add_layer(self, output: _Output, data: np.ndarray) -> None:
        info = {"model": output.model, "source": output.source.name, "scope": output.scope}
        if output.learn_noise:
            info["learnt_noise_seconds"] = output.learn_noise
        name = f"{output.source.name} [restored]"
        self.viewer.add_image(data, **output_properties(output.source, output.region, name, info))
