"""Screenshots of the three napari widgets in use, for the docs.

Run headless from the repository root:

    xvfb-run -a .venv/bin/python scripts/screenshots.py [--out docs/images] [--model tiny]

Each widget runs on a sample image with the chosen model on the CPU; the user model folder is
a temporary one, so nothing is saved for real.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PLUGIN = "napari-allinone"
SIZE = (1280, 800)


def wait_until(condition: Callable[[], bool], timeout: float = 600.0) -> None:
    """Process Qt events until `condition()` holds."""
    from qtpy.QtWidgets import QApplication

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the widget did not finish in time")
        QApplication.processEvents()
        time.sleep(0.02)


def new_viewer(sample: str):
    """A viewer of the window size used for every picture, showing one sample."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(*SIZE)
    viewer.open_sample(PLUGIN, sample)
    return viewer


def open_widget(viewer, name: str, model: str):
    """Open a widget through the manifest, on `model` and the CPU."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    widget.engine.model.select(model)
    widget.engine.set_device("cpu")
    return widget


def finish(widget) -> None:
    """Wait until the widget's job is no longer running."""
    wait_until(lambda: not widget.job.state.busy)


def save(viewer, path: Path) -> None:
    """Grab the whole window (without notification pop-ups) into `path`; close the viewer."""
    from qtpy.QtWidgets import QApplication, QWidget

    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.02)
    for child in viewer.window._qt_window.findChildren(QWidget):
        if type(child).__name__ == "NapariQtNotification":
            child.hide()
    viewer.window._qt_window.grab().save(str(path), "PNG", 9)
    print(f"{path}: {path.stat().st_size // 1024} KB")
    viewer.close()


def restore_picture(out: Path, model: str) -> None:
    viewer = new_viewer("hazy_photo")
    widget = open_widget(viewer, "Restore", model)
    widget.run_button.click()
    finish(widget)
    viewer.grid.enabled = True
    save(viewer, out / "restore.png")


def composition_picture(out: Path, model: str) -> None:
    viewer = new_viewer("rainy_photo")
    widget = open_widget(viewer, "Degradation composition", model)
    widget.add_maps.setChecked(True)
    wait_until(lambda: len(widget.probabilities) == 6)
    finish(widget)
    save(viewer, out / "composition.png")


def finetune_picture(out: Path, model: str, steps: int) -> None:
    viewer = new_viewer("noisy_fluorescence")
    widget = open_widget(viewer, "Fine-tune", model)
    widget.degraded.set_layer(viewer.layers["noisy fluorescence"])
    widget.clean.set_layer(viewer.layers["noisy fluorescence (clean)"])
    widget.budget.setValue(steps)
    widget.start_button.click()
    finish(widget)
    save(viewer, out / "finetune.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["ALLINONE_MODELS_DIR"] = tempfile.mkdtemp(prefix="allinone-models-")
    restore_picture(args.out, args.model)
    composition_picture(args.out, args.model)
    finetune_picture(args.out, args.model, args.steps)


if __name__ == "__main__":
    main()
