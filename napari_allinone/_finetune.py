"""Fine-tune dock widget: adapt a model to a (degraded, clean) pair of layers, or to a noisy layer
alone, then save it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from napari.layers import Image, Shapes
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPushButton,
    QSpinBox,
)

from napari_allinone._controls import CurvePlot, EnginePicker, JobWidget, LayerCombo
from napari_allinone._layers import guess_layer_axes, layer_data, rectangles
from napari_allinone._models import name_problem, save_model, user_model_path
from napari_allinone._workers import EngineChoice, FinetuneRequest, JobState, finetune_job

if TYPE_CHECKING:
    from napari.viewer import Viewer

    from allinone.jobs import Progress

Unit = Literal["steps", "seconds"]
ADAPT = {"all parameters": "all", "degradation modules only": "degradation"}
NO_CLEAN = "(none: learn from the noise)"


@dataclass
class FinetuneSettings:
    """What the Fine-tune widget edits."""

    engine: EngineChoice = field(default_factory=EngineChoice)
    val_fraction: float = 0.2
    budget: int = 200
    unit: Unit = "steps"
    lr: float = 1e-3
    adapt: str = "all"


class FinetuneWidget(JobWidget):
    """Fine-tune on a degraded/clean pair or a noisy layer alone (optionally inside rectangles)
    and save the model."""

    def __init__(self, napari_viewer: Viewer) -> None:
        super().__init__(napari_viewer, "Fine-tuning")
        self.settings = FinetuneSettings()
        self.result: Any = None
        self.degraded = LayerCombo(napari_viewer, Image)
        self.clean = LayerCombo(napari_viewer, Image, none_label=NO_CLEAN)
        self.clean.setToolTip(
            "The clean version of the degraded layer, same shape. Without one, the model learns "
            "to remove the layer's own noise (self-supervised): for noise independent from pixel "
            "to pixel, such as photon and read noise; other degradations are kept."
        )
        self.regions = LayerCombo(napari_viewer, Shapes, none_label="(whole image)")
        self.val_fraction = QDoubleSpinBox(minimum=0.0, maximum=0.5, singleStep=0.05, value=0.2)
        self.budget = QSpinBox(minimum=1, maximum=1_000_000, value=self.settings.budget)
        self.unit = QComboBox()
        self.unit.addItems(["steps", "seconds"])
        self.lr = QDoubleSpinBox(decimals=5, minimum=1e-5, maximum=1e-1, singleStep=1e-4)
        self.lr.setValue(self.settings.lr)
        self.adapt = QComboBox()
        self.adapt.addItems(list(ADAPT))
        self.engine = EnginePicker()
        self.start_button = QPushButton("Start")
        self.start_button.setToolTip(
            "Stop ends the run after the current step and keeps the best weights so far."
        )
        self._request_running: FinetuneRequest | None = None
        self.plot = CurvePlot(napari_viewer, ("loss", "val PSNR"))
        self.summary = QLabel(wordWrap=True)
        self.name = QLineEdit(placeholderText="name of the new model")
        self.save_button = QPushButton("Save")
        self._layout()
        self._connect()
        self._state_changed(JobState.IDLE)

    def _layout(self) -> None:
        form = QFormLayout(self)
        form.addRow("Degraded", self.degraded)
        form.addRow("Clean", self.clean)
        form.addRow("Regions", self.regions)
        form.addRow("Validation share", self.val_fraction)
        budget = QHBoxLayout()
        budget.addWidget(self.budget)
        budget.addWidget(self.unit)
        form.addRow("Budget", budget)
        form.addRow("Learning rate", self.lr)
        form.addRow("Adapt", self.adapt)
        self.engine.add_rows(form)
        form.addRow(self.start_button)
        form.addRow(self.plot)
        form.addRow(self.summary)
        save = QHBoxLayout()
        save.addWidget(self.name)
        save.addWidget(self.save_button)
        form.addRow("Save as", save)

    def _connect(self) -> None:
        self.settings.engine = self.engine.choice()
        self.degraded.layer_changed.connect(lambda _: self._refresh())
        self.clean.layer_changed.connect(lambda _: self._refresh())
        self.val_fraction.valueChanged.connect(lambda v: self._update(val_fraction=v))
        self.budget.valueChanged.connect(lambda v: self._update(budget=v))
        self.unit.currentTextChanged.connect(lambda v: self._update(unit=v))
        self.lr.valueChanged.connect(lambda v: self._update(lr=v))
        self.adapt.currentTextChanged.connect(lambda v: self._update(adapt=ADAPT[v]))
        self.engine.on_change(lambda: self._update(engine=self.engine.choice()))
        self.start_button.clicked.connect(self._start_clicked)
        self.name.textChanged.connect(lambda _: self._refresh())
        self.save_button.clicked.connect(self.save)

    def _update(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.settings, name, value)

    def _refresh(self) -> None:
        self._state_changed(self.job.state)

    def _state_changed(self, state: JobState) -> None:
        busy = state.busy
        for control in (
            self.degraded,
            self.clean,
            self.regions,
            self.val_fraction,
            self.budget,
            self.unit,
            self.lr,
            self.adapt,
        ):
            control.setEnabled(not busy)
        self.engine.set_enabled(not busy)
        labels = {JobState.RUNNING: "Stop", JobState.CANCELLING: "Stopping…"}
        if state is JobState.RUNNING and self._finishing():
            labels[JobState.RUNNING] = "Finishing…"
        self.start_button.setText(labels.get(state, "Start"))
        ready = self.degraded.layer() is not None
        self.start_button.setEnabled(state is JobState.RUNNING or (not busy and ready))
        can_save = not busy and self.result is not None and bool(self.name.text().strip())
        self.name.setEnabled(not busy and self.result is not None)
        self.save_button.setEnabled(can_save)

    def _finishing(self) -> bool:
        return self._request_running is not None and self._request_running.finish.is_set()

    def _start_clicked(self) -> None:
        if self.job.state is JobState.RUNNING:
            if self._request_running is not None:
                self._request_running.finish.set()
            self._state_changed(JobState.RUNNING)
        else:
            self.start()

    def _request(self) -> FinetuneRequest | None:
        """The job for the current settings, or None after telling the user what is wrong."""
        from allinone.errors import AllInOneError

        degraded, clean = self.degraded.layer(), self.clean.layer()
        if degraded is None or (clean is not None and not _matching(degraded, clean)):
            return None
        try:
            axes = guess_layer_axes(degraded)
        except AllInOneError as error:
            show_error(f"'{degraded.name}' cannot be fine-tuned on: {error}")
            return None
        rois = None
        if (shapes := self.regions.layer()) is not None:
            rois = rectangles(shapes, degraded)
            if not rois:
                show_error(f"Draw at least one rectangle inside the image in '{shapes.name}'.")
                return None
        settings = self.settings
        return FinetuneRequest(
            degraded=np.asarray(layer_data(degraded)),
            clean=None if clean is None else np.asarray(layer_data(clean)),
            axes=axes,
            rois=rois,
            engine=settings.engine,
            steps=settings.budget if settings.unit == "steps" else None,
            seconds=float(settings.budget) if settings.unit == "seconds" else None,
            val_fraction=settings.val_fraction,
            lr=settings.lr,
            adapt=settings.adapt,
        )

    def start(self) -> None:
        """Start fine-tuning with the current settings (refused while a run is going on)."""
        if self._already_running():
            return
        request = self._request()
        if request is None:
            return
        self.result = None
        self.plot.clear()
        self.summary.setText("")
        self._request_running = request
        self.job.start(finetune_job, request, on_result=self._finished, on_progress=self._progress)

    def _progress(self, step: Progress) -> None:
        metrics = step.metrics or {}
        x = metrics.get("step", step.done)
        if "loss" in metrics:
            self.plot.add("loss", x, metrics["loss"])
        if "val_psnr" in metrics:
            self.plot.add("val PSNR", x, metrics["val_psnr"])

    def _finished(self, result: Any) -> None:
        self.result = result
        self.summary.setText(_summary(result))
        if not self.name.text().strip():
            self.name.setText(self._default_name())

    def _default_name(self) -> str:
        base = self.settings.engine.model.replace("\\", "/").rsplit("/", 1)[-1]
        base = base.removesuffix(".safetensors")
        layer = self.degraded.layer()
        suffix = "".join(c if c.isalnum() else "-" for c in layer.name) if layer else "tuned"
        return f"{base}-{suffix}".strip("-")[:64]

    def save(self) -> None:
        """Save the fine-tuned model into the user model folder."""
        from allinone.errors import AllInOneError

        name = self.name.text().strip()
        if self.result is None:
            return
        if problem := name_problem(name):
            show_error(problem)
            return
        if user_model_path(name).exists() and not self._confirm_replace(name):
            return
        try:
            path = save_model(self.result, name)
        except AllInOneError as error:
            show_error(str(error))
            return
        show_info(f"Saved the model '{name}' to {path}.")

    def _confirm_replace(self, name: str) -> bool:
        answer = QMessageBox.question(
            self, "Replace model?", f"A model named '{name}' exists already. Replace it?"
        )
        return answer == QMessageBox.Yes


def _matching(degraded: Image, clean: Image) -> bool:
    """Whether `clean` can be `degraded`'s clean version; if not, the user is told why."""
    shape, clean_shape = layer_data(degraded).shape, layer_data(clean).shape
    if degraded == clean:
        show_error(
            "Choose two different layers: a degraded image and its clean version (or no clean "
            "layer, to learn from the noise alone)."
        )
        return False
    if tuple(shape) != tuple(clean_shape):
        show_error(
            f"'{degraded.name}' has shape {tuple(shape)} but '{clean.name}' has "
            f"{tuple(clean_shape)}: the degraded and clean layers must match pixel for pixel."
        )
        return False
    return True


def _summary(result: Any) -> str:
    """PSNR before and after on the validation part, or why there is none."""
    if result.psnr_before is None:
        return f"Done: {result.steps} steps (no validation share, so no PSNR to compare)."
    text = f"PSNR before: {result.psnr_before:.2f} dB → after: {result.psnr_after:.2f} dB"
    if result.self_supervised:
        text += " (self-supervised: measured against noisy pixels, only the change counts)"
    if not result.improved:
        text += " (no improvement: the original weights are kept)"
    elif result.share < 1:
        text += f" ({result.share:.0%} of the way from the original to the adapted weights)"
    return text
