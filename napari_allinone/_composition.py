"""Degradation composition dock widget: which degradations does the model see, and where."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from napari.layers import Image, Shapes
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QPushButton

from allinone.errors import AllInOneError
from allinone.types import DEGRADATIONS
from napari_allinone._controls import (
    BarChart,
    EnginePicker,
    JobWidget,
    LayerCombo,
    connect_while_alive,
)
from napari_allinone._layers import (
    Region,
    crop,
    displayed_plane,
    guess_layer_axes,
    map_placement,
    rectangles,
    whole_layer,
)
from napari_allinone._workers import AnalyzeRequest, EngineChoice, JobState, analyze_job

if TYPE_CHECKING:
    from napari.viewer import Viewer

Scope = Literal["current slice", "whole layer", "rectangle"]
SCOPES: tuple[Scope, ...] = ("current slice", "whole layer", "rectangle")
DEBOUNCE_MS = 300


@dataclass
class CompositionSettings:
    """What the Degradation composition widget edits."""

    engine: EngineChoice = field(default_factory=EngineChoice)
    scope: Scope = "current slice"
    auto: bool = True
    flips: bool = True
    add_maps: bool = False


NOISE_TIP = (
    "Standard deviation of the image's noise in its own intensity units, estimated from its finest "
    "wavelet detail in nine windows of the (middle) plane; texture adds a little (clean photos "
    "read 1-3 levels of 255). For an 8-bit colour photo, also how many stops under-exposed the "
    "exposure estimator reads it, from an overview of the whole plane; restoring with auto "
    "intensities undoes the darkening from 0.75 stops."
)


class CompositionWidget(JobWidget):
    """Bar chart of the six degradation probabilities of a layer, a slice or a rectangle."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(napari_viewer, "Analysing", progress_bar=False, quiet=True)
        self.settings = CompositionSettings()
        self.probabilities: dict[str, float] = {}
        self.layer = LayerCombo(napari_viewer, Image)
        self.scope = QComboBox()
        self.scope.addItems(SCOPES)
        self.shapes = LayerCombo(napari_viewer, Shapes)
        self.shapes.setToolTip("The selected rectangle, or the last one drawn, is analysed.")
        self.engine = EnginePicker(precision=False)
        self.auto = QCheckBox("Update automatically", checked=True)
        self.flips = QCheckBox("Average over flips (more accurate, 4x the time)", checked=True)
        self.add_maps = QCheckBox("Add per-tile maps as layers")
        self.analyse_button = QPushButton("Analyse")
        self.chart = BarChart(napari_viewer, DEGRADATIONS)
        self.noise = QLabel(toolTip=NOISE_TIP, wordWrap=True)
        self.status = QLabel(wordWrap=True)
        self._watched_shapes: Shapes | None = None
        self._timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._timer.timeout.connect(self.analyse)
        self._layout()
        self._connect()
        self._state_changed(JobState.IDLE)
        self.schedule()

    def _layout(self) -> None:
        form = QFormLayout(self)
        form.addRow("Image", self.layer)
        form.addRow("Region", self.scope)
        form.addRow("Rectangles", self.shapes)
        self.engine.add_rows(form)
        form.addRow(self.auto)
        form.addRow(self.flips)
        form.addRow(self.add_maps)
        form.addRow(self.analyse_button)
        form.addRow(self.chart)
        form.addRow(self.noise)
        form.addRow(self.status)

    def _connect(self) -> None:
        self.settings.engine = self.engine.choice()
        self.layer.layer_changed.connect(lambda _: self.schedule())
        self.scope.currentTextChanged.connect(lambda text: self._update(scope=text))
        self.shapes.layer_changed.connect(self._watch_shapes)
        self.engine.on_change(lambda: self._update(engine=self.engine.choice()))
        self.auto.toggled.connect(lambda checked: self._update(auto=checked))
        self.flips.toggled.connect(lambda checked: self._update(flips=checked))
        self.add_maps.toggled.connect(lambda checked: self._update(add_maps=checked))
        self.analyse_button.clicked.connect(self._analyse_clicked)
        connect_while_alive(self, self.viewer.dims.events.current_step, self._step_changed)
        self._watch_shapes(self.shapes.layer())
        self.destroyed.connect(lambda *_: self._unwatch_shapes())

    def _update(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.settings, name, value)
        self._state_changed(self.job.state)
        self.schedule()

    def _watch_shapes(self, shapes: Shapes | None) -> None:
        """Follow the data of the chosen Shapes layer only."""
        self._unwatch_shapes()
        self._watched_shapes = shapes
        if shapes is not None:
            shapes.events.data.connect(self._shapes_changed)
        if self.settings.scope == "rectangle":
            self.schedule()

    def _unwatch_shapes(self) -> None:
        if self._watched_shapes is not None:
            self._watched_shapes.events.data.disconnect(self._shapes_changed)
            self._watched_shapes = None

    def _shapes_changed(self, event: Any = None) -> None:
        if self.settings.scope == "rectangle":
            self.schedule()

    def _step_changed(self, event: Any = None) -> None:
        if self.settings.scope != "whole layer":
            self.schedule()

    def schedule(self) -> None:
        """Analyse again in a moment, once the changes have settled (when automatic)."""
        if self.settings.auto:
            self._timer.start()

    def _analyse_clicked(self) -> None:
        if self.job.state is JobState.RUNNING:
            self.job.cancel()
        else:
            self.analyse()

    def _region(self) -> Region | None:
        """What to analyse now, or None (with the reason shown) when nothing can be."""
        layer = self.layer.layer()
        if layer is None:
            return self._nothing("Add or choose an image layer.")
        if self.settings.scope == "whole layer":
            try:
                return whole_layer(layer, guess_layer_axes(layer))
            except AllInOneError as error:
                return self._nothing(f"{error}: analyse a slice instead.")
        plane = displayed_plane(layer, self.viewer)
        if self.settings.scope == "current slice":
            return plane
        shapes = self.shapes.layer()
        boxes = rectangles(shapes, layer) if shapes is not None else []
        if not boxes:
            return self._nothing("Draw a rectangle in the chosen Shapes layer.")
        selected = sorted(shapes.selected_data)
        return crop(plane, boxes[selected[-1]] if selected else boxes[-1])

    def _nothing(self, reason: str) -> None:
        self.status.setText(reason)
        return None

    def analyse(self) -> None:
        """Start a composition job for the current region, dropping a stale one."""
        self._timer.stop()
        self.job.stop()
        region = self._region()
        if region is None:
            self._state_changed(self.job.state)
            return
        request = AnalyzeRequest(
            data=region.data,
            axes=region.axes,
            engine=self.settings.engine,
            flips=self.settings.flips,
        )
        source = self.layer.layer()
        self.job.start(
            analyze_job, request, on_result=lambda result: self._show(source, region, result)
        )

    def _show(self, source: Image, region: Region, composition: Any) -> None:
        self.probabilities = {name: float(composition.probabilities[name]) for name in DEGRADATIONS}
        self.chart.set_values(self.probabilities)
        level = composition.noise_level
        noise = "unknown" if level is None else f"σ {level:.3g} (image units)"
        lines = [f"Noise level: {noise}"]
        if composition.under_exposure is not None:
            from allinone.infer.auto_exposure import describe  # loads torch: not at start-up

            lines.append(f"Exposure: {describe(composition.under_exposure)}")
        self.noise.setText("\n".join(lines))
        if self.settings.add_maps:
            self._add_maps(source, region, composition)

    def _add_maps(self, source: Image, region: Region, composition: Any) -> None:
        scale, translate = map_placement(region, tuple(composition.map_scale))
        for name, values in zip(DEGRADATIONS, np.asarray(composition.maps), strict=True):
            layer_name = f"{source.name} [{name} map]"
            if layer_name in self.viewer.layers:
                layer = self.viewer.layers[layer_name]
                layer.data, layer.scale, layer.translate = values, scale, translate
            else:
                self.viewer.add_image(
                    values,
                    name=layer_name,
                    scale=scale,
                    translate=translate,
                    colormap="inferno",
                    contrast_limits=(0.0, 1.0),
                    opacity=0.5,
                    blending="additive",
                    visible=name == DEGRADATIONS[0],
                    metadata={"allinone": {"map": name, "source": source.name}},
                )

    def _state_changed(self, state: JobState) -> None:
        for control in (self.layer, self.scope):
            control.setEnabled(state is not JobState.CANCELLING)
        self.shapes.setEnabled(self.settings.scope == "rectangle")
        self.analyse_button.setText("Cancel" if state is JobState.RUNNING else "Analyse")
        self.analyse_button.setEnabled(state is not JobState.CANCELLING)
        message = {
            JobState.RUNNING: "Analysing…",
            JobState.CANCELLING: "Stopping…",
            JobState.DONE: "Probability that each degradation is present.",
            JobState.FAILED: "Failed: see the notification.",
        }.get(state)
        if message is not None:
            self.status.setText(message)
