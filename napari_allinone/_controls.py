"""Small Qt controls shared by the dock widgets: layer and model pickers, themed plots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from napari.utils.notifications import show_info, show_warning
from napari.utils.theme import get_theme
from qtpy.QtCore import QEvent, QPointF, QRectF, Qt, Signal
from qtpy.QtGui import QColor, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QSizePolicy,
    QToolButton,
    QWidget,
)

from napari_allinone._models import (
    available_devices,
    model_choices,
    model_file_problem,
    models_changed,
)
from napari_allinone._workers import EngineChoice, Job, JobState

if TYPE_CHECKING:
    from napari.layers import Layer
    from napari.viewer import Viewer

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_LOAD_FILE = "\0load-from-file"
_ERROR_ROLE = Qt.UserRole + 2
"""Item data: why the model cannot be used, or None."""


def connect_while_alive(widget: QWidget, emitter: Any, callback: Callable) -> None:
    """Connect `callback` to a napari or psygnal `emitter` until `widget` is destroyed."""
    emitter.connect(callback)
    widget.destroyed.connect(lambda *_: emitter.disconnect(callback))


class LayerCombo(QComboBox):
    """The layers of one type, kept up to date with the viewer; `layer()` is the choice."""

    layer_changed = Signal(object)

    def __init__(
        self, viewer: Viewer, layer_type: type, none_label: str | None = None, parent=None
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._none_label = none_label
        events = viewer.layers.events
        for event in (events.inserted, events.removed, events.moved):
            connect_while_alive(self, event, self.refresh)
        self.currentIndexChanged.connect(lambda _: self.layer_changed.emit(self.layer()))
        self.destroyed.connect(lambda *_: self._forget_layers())
        self.refresh()

    def layer(self) -> Layer | None:
        """The chosen layer, or None."""
        return self.currentData()

    def set_layer(self, layer: Layer | None) -> None:
        """Choose `layer` (or the none entry)."""
        for index in range(self.count()):
            if self.itemData(index) == layer:
                self.setCurrentIndex(index)
                return

    def refresh(self, event: Any = None) -> None:
        """Rebuild the list, keeping the choice when its layer still exists."""
        before = current = self.layer()
        layers = [layer for layer in self._viewer.layers if isinstance(layer, self._type)]
        self.blockSignals(True)
        self.clear()
        if self._none_label is not None:
            self.addItem(self._none_label, None)
        for layer in layers:
            self.addItem(layer.name, layer)
            layer.events.name.connect(self._rename)
        if current is None and self._none_label is None:
            current = self._preferred(layers)
        self.set_layer(current)
        self.blockSignals(False)
        if self.layer() != before:
            self.layer_changed.emit(self.layer())

    def _forget_layers(self) -> None:
        for layer in self._viewer.layers:
            layer.events.name.disconnect(self._rename)

    def _preferred(self, layers: Sequence[Layer]) -> Layer | None:
        active = self._viewer.layers.selection.active
        if active is not None and isinstance(active, self._type):
            return active
        return layers[-1] if layers else None

    def _rename(self, event: Any = None) -> None:
        for index in range(self.count()):
            layer = self.itemData(index)
            if layer is not None:
                self.setItemText(index, layer.name)


class ModelPicker(QWidget):
    """Shipped, preset and user models, a refresh button and "Load from file…"."""

    changed = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        refresh = QToolButton(text="↻", toolTip="Refresh the list of models")
        refresh.clicked.connect(self.refresh)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(refresh)
        self._previous = 0
        self.combo.activated.connect(self._activated)
        self.combo.currentIndexChanged.connect(self._index_changed)
        self.refresh()
        connect_while_alive(self, models_changed, self.refresh)

    def value(self) -> str:
        """What `Restorer.from_pretrained` is given: a model name or a path."""
        return self.combo.currentData() or ""

    def select(self, name_or_path: str) -> bool:
        """Choose a model by its label, name or path; False when it is not listed."""
        for index in range(self.combo.count() - 1):
            label, value = self.combo.itemText(index), self.combo.itemData(index)
            if name_or_path in (label, value) or label.split(" (")[0] == name_or_path:
                self.combo.setCurrentIndex(index)
                return True
        return False

    def labels(self) -> list[str]:
        """The labels listed, without "Load from file…"."""
        return [self.combo.itemText(i) for i in range(self.combo.count() - 1)]

    def refresh(self) -> None:
        """Ask the engine for the models again, keeping the current choice."""
        current = self.value() or "default"
        extra = [
            (self.combo.itemText(i), self.combo.itemData(i), self.combo.itemData(i, _ERROR_ROLE))
            for i in range(self.combo.count())
            if self.combo.itemData(i, Qt.UserRole + 1) == "file"
        ]
        self.combo.blockSignals(True)
        self.combo.clear()
        for choice in model_choices():
            self.combo.addItem(choice.label, choice.value)
            self.combo.setItemData(self.combo.count() - 1, choice.tooltip, Qt.ToolTipRole)
            self.combo.setItemData(self.combo.count() - 1, choice.error, _ERROR_ROLE)
        for label, value, error in extra:
            self._add_file_item(label, value, error)
        self.combo.addItem("Load from file…", _LOAD_FILE)
        self.combo.blockSignals(False)
        if not self.select(current):
            self.combo.setCurrentIndex(0)
        self._previous = self.combo.currentIndex()
        self.changed.emit(self.value())

    def _add_file_item(self, label: str, path: str, error: str | None = None) -> int:
        self.combo.addItem(label, path)
        index = self.combo.count() - 1
        self.combo.setItemData(index, f"unusable: {error}" if error else path, Qt.ToolTipRole)
        self.combo.setItemData(index, error, _ERROR_ROLE)
        self.combo.setItemData(index, "file", Qt.UserRole + 1)
        return index

    def _activated(self, index: int) -> None:
        if self.combo.itemData(index) != _LOAD_FILE:
            if error := self.combo.itemData(index, _ERROR_ROLE):
                show_warning(f"The model '{self.combo.itemText(index)}' cannot be used: {error}")
            return
        path, _ = QFileDialog.getOpenFileName(
            self, "Load a model", "", "Model weights (*.safetensors)"
        )
        if path:
            self.add_file(path)
        else:
            self.combo.setCurrentIndex(self._previous)

    def add_file(self, path: str) -> None:
        """List a weights file chosen by the user and select it; warn when it is unusable."""
        from pathlib import Path

        error = model_file_problem(path)
        if error:
            show_warning(f"The model file {path} cannot be used: {error}")
        self.combo.blockSignals(True)
        self.combo.removeItem(self.combo.count() - 1)
        index = self._add_file_item(f"{Path(path).stem} (file)", path, error)
        self.combo.addItem("Load from file…", _LOAD_FILE)
        self.combo.blockSignals(False)
        self.combo.setCurrentIndex(index)

    def _index_changed(self, index: int) -> None:
        if self.combo.itemData(index) != _LOAD_FILE:
            self._previous = index
            self.changed.emit(self.value())


SCALING_LABELS: dict[str, str] = {
    "auto": "auto",
    "percentile": "keep exposure",
    "range": "correct exposure (dark images)",
}
SCALING_TIP = (
    "How intensities reach the model. Keep exposure stretches the data's 0.1-99.9 percentiles "
    "and maps the result back, never brighter than the input, so a dim fluorescence image is "
    "denoised, never brightened. Correct exposure undoes the darkening that the exposure "
    "estimator reads in an 8-bit colour photo and uses the dtype's full range, so the model may "
    "brighten an under-exposed image further. Auto keeps the exposure, except that the "
    "darkening of an 8-bit colour photo read as under-exposed is undone first."
)


class EnginePicker:
    """Model, device, precision and intensity-scaling controls, as rows of the caller's form."""

    def __init__(self, *, precision: bool = True) -> None:
        self.model = ModelPicker()
        self.device = QComboBox()
        for device_id, label in available_devices():
            self.device.addItem(label, device_id)
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.scaling = QComboBox(toolTip=SCALING_TIP)
        for scaling, label in SCALING_LABELS.items():
            self.scaling.addItem(label, scaling)
        self._with_precision = precision

    def add_rows(self, form: QFormLayout) -> None:
        """Add the controls to `form`."""
        form.addRow("Model", self.model)
        form.addRow("Device", self.device)
        if self._with_precision:
            form.addRow("Precision", self.precision)
        form.addRow("Intensities", self.scaling)

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call `callback()` whenever any of the controls changes."""
        self.model.changed.connect(lambda _: callback())
        for combo in (self.device, self.precision, self.scaling):
            combo.currentIndexChanged.connect(lambda _: callback())

    def set_enabled(self, enabled: bool) -> None:
        """Enable or disable every control."""
        for control in (self.model, self.device, self.precision, self.scaling):
            control.setEnabled(enabled)

    def choice(self) -> EngineChoice:
        """The current model, device, precision and scaling."""
        return EngineChoice(
            model=self.model.value(),
            device=self.device.currentData() or "auto",
            precision=self.precision.currentText(),
            scaling=self.scaling.currentData() or "auto",
        )

    def set_device(self, device_id: str) -> None:
        """Choose a device by id ("cpu", "cuda:0", …)."""
        index = self.device.findData(device_id)
        if index >= 0:
            self.device.setCurrentIndex(index)


class JobWidget(QWidget):
    """A dock widget that owns a `Job`; closing or removing the widget stops the job."""

    def __init__(self, viewer: Viewer, description: str, **job_options: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.job = Job(description, self._state_changed, **job_options)
        self.destroyed.connect(lambda *_, job=self.job: job.stop())

    def _state_changed(self, state: JobState) -> None:
        """Enable and label the controls for `state`."""
        raise NotImplementedError

    def _already_running(self) -> bool:
        """True, after telling the user, while a job is running or stopping: a second run is
        refused, never started beside the first."""
        if not self.job.state.busy:
            return False
        show_info(
            f"{self.job.description}: a run is still going on; cancel it or wait for it to end."
        )
        return True

    def closeEvent(self, event: QEvent) -> None:
        self.job.stop()
        super().closeEvent(event)

    def event(self, event: QEvent) -> bool:
        if event.type() == QEvent.ParentChange and self.parent() is None:
            self.job.stop()
        return super().event(event)


def theme_colors(viewer: Viewer) -> dict[str, QColor]:
    """The napari theme colours a plot needs, as QColors."""
    theme = get_theme(viewer.theme)
    names = ("background", "foreground", "primary", "highlight", "text", "current", "warning")
    return {name: QColor(getattr(theme, name).as_hex()) for name in names}


class _ThemedPlot(QWidget):
    """Base of the small plots: follows the viewer's theme."""

    def __init__(self, viewer: Viewer, parent=None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self.colors = theme_colors(viewer)
        connect_while_alive(self, viewer.events.theme, self._theme_changed)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def _theme_changed(self, event: Any = None) -> None:
        self.colors = theme_colors(self._viewer)
        self.update()


class BarChart(_ThemedPlot):
    """Horizontal bars, one a label, values in [0, 1]."""

    ROW = 22
    VALUE = 40

    def __init__(self, viewer: Viewer, labels: Sequence[str], parent=None) -> None:
        super().__init__(viewer, parent)
        self.labels = tuple(labels)
        self.values: dict[str, float] = {}
        metrics = self.fontMetrics()
        self.label_width = 10 + max(metrics.horizontalAdvance(self._text(n)) for n in self.labels)
        self.setMinimumHeight(self.ROW * len(self.labels) + 4)

    @staticmethod
    def _text(label: str) -> str:
        return label.replace("_", " ")

    def set_values(self, values: dict[str, float]) -> None:
        """Show `values` (missing labels show as empty bars)."""
        self.values = {key: float(value) for key, value in values.items()}
        self.setToolTip("\n".join(f"{k}: {v:.3f}" for k, v in self.values.items()))
        self.update()

    def paintEvent(self, event: QEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        track_width = max(self.width() - self.label_width - self.VALUE - 8, 10)
        for row, label in enumerate(self.labels):
            top = 2 + row * self.ROW
            value = self.values.get(label)
            painter.setPen(self.colors["text"])
            painter.drawText(
                QRectF(0, top, self.label_width - 6, self.ROW),
                Qt.AlignRight | Qt.AlignVCenter,
                self._text(label),
            )
            track = QRectF(self.label_width, top + 4, track_width, self.ROW - 8)
            painter.fillRect(track, self.colors["foreground"])
            if value is not None:
                bar = QRectF(track.left(), track.top(), track_width * min(max(value, 0), 1), 0)
                bar.setHeight(track.height())
                painter.fillRect(bar, self.colors["current"])
                painter.drawText(
                    QRectF(track.right() + 6, top, self.VALUE, self.ROW),
                    Qt.AlignLeft | Qt.AlignVCenter,
                    f"{value:.2f}",
                )
        painter.end()


class CurvePlot(_ThemedPlot):
    """Curves against a shared x axis (training step), each scaled to its own range."""

    def __init__(self, viewer: Viewer, names: Sequence[str], parent=None) -> None:
        super().__init__(viewer, parent)
        self.names = tuple(names)
        self.points: dict[str, list[tuple[float, float]]] = {name: [] for name in self.names}
        self.setMinimumHeight(140)

    def clear(self) -> None:
        """Forget every point."""
        self.points = {name: [] for name in self.names}
        self.update()

    def add(self, name: str, x: float, y: float) -> None:
        """Append a point to curve `name`."""
        self.points[name].append((float(x), float(y)))
        self.update()

    def _pens(self) -> list[QColor]:
        return [self.colors["current"], self.colors["warning"], self.colors["highlight"]]

    def paintEvent(self, event: QEvent) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        area = QRectF(8, 22, self.width() - 16, self.height() - 30)
        painter.fillRect(area, self.colors["foreground"])
        xs = [x for points in self.points.values() for x, _ in points]
        x_range = (min(xs), max(max(xs), min(xs) + 1)) if xs else (0.0, 1.0)
        for index, (name, color) in enumerate(zip(self.names, self._pens(), strict=False)):
            self._draw_curve(painter, area, self.points[name], x_range, color)
            self._draw_legend(painter, index, name, color)
        painter.end()

    def _draw_curve(
        self,
        painter: QPainter,
        area: QRectF,
        points: list[tuple[float, float]],
        x_range: tuple[float, float],
        color: QColor,
    ) -> None:
        if not points:
            return
        ys = [y for _, y in points]
        low, high = min(ys), max(ys)
        span_y = high - low or 1.0
        span_x = x_range[1] - x_range[0]
        path = QPainterPath()
        for i, (x, y) in enumerate(points):
            point = QPointF(
                area.left() + area.width() * (x - x_range[0]) / span_x,
                area.bottom() - area.height() * (0.05 + 0.9 * (y - low) / span_y),
            )
            if i:
                path.lineTo(point)
            else:
                path.moveTo(point)
        painter.setPen(QPen(color, 2))
        painter.drawPath(path)

    def _draw_legend(self, painter: QPainter, index: int, name: str, color: QColor) -> None:
        points = self.points[name]
        latest = f" {points[-1][1]:.4g}" if points else ""
        painter.setPen(color)
        painter.drawText(
            QRectF(8 + index * 150, 2, 150, 18),
            Qt.AlignLeft | Qt.AlignVCenter,
            f"■ {name}{latest}",
        )
