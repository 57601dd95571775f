"""Background jobs: napari thread workers wrapping the engine's generators, and their runner.

Each job function is a generator: it loads a Restorer, then `yield from`s the engine's
`*_steps` generator, so every `Progress` reaches the GUI thread and `worker.quit()` stops the
job between two batches. User mistakes (`AllInOneError`) come back as a `Failure` value, shown
as a plain notification, and `AllInOneWarning`s (a fallback to the CPU) as warnings; anything
else is a bug and reaches napari's error reporting.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial, wraps
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info, show_warning

from allinone.infer.options import RestoreOptions
from napari_allinone._models import load_restorer

if TYPE_CHECKING:
    from allinone.jobs import Progress


class JobState(enum.Enum):
    """Where a widget's job stands; it alone decides which buttons are enabled."""

    IDLE = "idle"
    RUNNING = "running"
    CANCELLING = "cancelling"
    DONE = "done"
    FAILED = "failed"

    @property
    def busy(self) -> bool:
        """True while a worker runs (or is being stopped)."""
        return self in (JobState.RUNNING, JobState.CANCELLING)


@dataclass(frozen=True)
class Failure:
    """A job that ended on a user-facing error or a cancellation."""

    message: str
    cancelled: bool = False


@dataclass(frozen=True)
class EngineChoice:
    """Which model runs where, and how intensities reach it (see `fit_normalization`)."""

    model: str = "default"
    device: str = "auto"
    precision: str = "auto"
    scaling: str = "auto"


@dataclass(frozen=True)
class RestoreRequest:
    """Everything a restore job needs; `data` is the array to restore."""

    data: Any
    axes: str | None
    engine: EngineChoice
    options: RestoreOptions = field(default_factory=RestoreOptions)
    """How to restore, intensity scaling included (`engine.scaling` is not read)."""
    learn_noise: float = 0.0
    """Seconds to fine-tune a copy of the model on the noise of `data` first; 0 for none."""
    store: str | None = None
    """An OME-Zarr path (*.zarr) to restore into, for data larger than memory; None: memory."""
    scale: tuple[float, ...] | None = None
    """The layer's scale, one entry per axis of `data`, written into `store`'s metadata."""


@dataclass(frozen=True)
class AnalyzeRequest:
    """Everything a composition job needs."""

    data: Any
    axes: str | None
    engine: EngineChoice
    flips: bool = True


@dataclass(frozen=True)
class FinetuneRequest:
    """Everything a fine-tuning job needs."""

    degraded: Any
    clean: Any
    """The clean image, or None to learn from the noise of `degraded` alone."""
    axes: str | None
    rois: list[tuple[int, int, int, int]] | None
    engine: EngineChoice
    steps: int | None = None
    seconds: float | None = None
    val_fraction: float = 0.2
    lr: float = 1e-3
    adapt: str = "all"
    finish: threading.Event = field(default_factory=threading.Event)
    """Set it to end the run early and keep the best weights so far."""


def guarded(job: Callable[..., Generator]) -> Callable[..., Generator]:
    """Turn the engine's user-facing errors of a job generator into a returned `Failure`."""

    @wraps(job)
    def run(*args: Any, **kwargs: Any) -> Generator:
        from allinone.errors import AllInOneError, Cancelled

        try:
            return (yield from job(*args, **kwargs))
        except Cancelled as error:
            return Failure(str(error) or "Cancelled.", cancelled=True)
        except AllInOneError as error:
            return Failure(str(error))

    return run


@guarded
def restore_job(request: RestoreRequest) -> Generator[Progress, None, np.ndarray]:
    """Restore `request.data`, after learning its noise when asked; returns the restored array
    (same shape; same dtype unless `options.float_output` makes an integer layer's float32)."""
    from allinone.train.finetune import finetune_steps

    engine = request.engine
    restorer = load_restorer(engine.model, engine.device, engine.precision)
    options = request.options
    if request.learn_noise:
        learnt = yield from finetune_steps(
            restorer,
            [(request.data, None)],
            axes=request.axes,
            seconds=request.learn_noise,
            options=options,
        )
        restorer = learnt.restorer
    if request.store is None:
        return (yield from restorer.restore_steps(request.data, request.axes, options=options))
    return (yield from _restore_into_store(restorer, request))


def _restore_into_store(restorer: Any, request: RestoreRequest) -> Generator[Progress, None, Any]:
    """Restore into a new OME-Zarr store, filled tile by tile; returns it opened lazily."""
    from allinone.heap import return_large_buffers
    from allinone.io import ensure_writable, image_output, read_image, result_like
    from allinone.ome_zarr import ngff_of

    path = ensure_writable(request.store)
    return_large_buffers()
    scale = request.scale or (1.0,) * len(request.axes)
    scale = tuple(scale) + (1.0,) * (len(request.axes) - len(scale))  # an RGB layer's colours
    metadata = {"ngff": ngff_of(request.axes, scale)}
    like = result_like(request.data, request.options.output_dtype(request.data.dtype))
    with image_output(path, like, axes=request.axes, metadata=metadata) as out:
        yield from restorer.restore_steps(
            request.data, request.axes, out=out, options=request.options
        )
    return read_image(path).array


@guarded
def analyze_job(request: AnalyzeRequest) -> Generator[Progress, None, Any]:
    """Estimate the degradation composition of `request.data`; returns a `Composition`."""
    engine = request.engine
    restorer = load_restorer(engine.model, engine.device, engine.precision)
    return (
        yield from restorer.analyze_steps(
            request.data, axes=request.axes, scaling=engine.scaling, flips=request.flips
        )
    )


@guarded
def finetune_job(request: FinetuneRequest) -> Generator[Progress, None, Any]:
    """Fine-tune a copy of the chosen model (the loaded one is left as is); returns a
    `FinetuneResult`."""
    from allinone.train.finetune import finetune_steps

    engine = request.engine
    restorer = load_restorer(engine.model, engine.device, engine.precision)
    return (
        yield from finetune_steps(
            restorer,
            [(request.degraded, request.clean)],
            axes=request.axes,
            rois=request.rois,
            steps=request.steps,
            seconds=request.seconds,
            val_fraction=request.val_fraction,
            lr=request.lr,
            adapt=request.adapt,
            finish=request.finish,
            options=RestoreOptions(scaling=engine.scaling),
        )
    )


class Job:
    """Runs one worker at a time for a widget and keeps its `JobState`.

    Results, progress and notifications of a worker that is no longer the current one (a
    stale request, a stopped job) are dropped.
    """

    def __init__(
        self,
        description: str,
        on_state: Callable[[JobState], None],
        *,
        progress_bar: bool = True,
        quiet: bool = False,
    ) -> None:
        self.description = description
        self.state = JobState.IDLE
        self._on_state = on_state
        self._progress_bar = progress_bar
        self._quiet = quiet
        self._worker: GeneratorWorker | None = None
        self._pbar: progress | None = None
        self._warnings_shown: set[str] = set()

    def start(
        self,
        job: Callable[..., Generator],
        request: object,
        on_result: Callable[[Any], None],
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        """Start `job(request)` in a thread, dropping any job still running."""
        self.stop()
        worker = create_worker(job, request, _start_thread=False)
        worker.yielded.connect(partial(self._yielded, worker, on_progress))
        worker.returned.connect(partial(self._returned, worker, on_result))
        worker.errored.connect(partial(self._errored, worker))
        worker.warned.connect(partial(self._warned, worker))
        worker.aborted.connect(partial(self._aborted, worker))
        worker.finished.connect(partial(self._finished, worker))
        self._worker = worker
        self._set_state(JobState.RUNNING)
        worker.start()

    def cancel(self) -> None:
        """Ask the running job to stop at its next batch; its `aborted` signal ends it."""
        if self._worker is not None and self.state is JobState.RUNNING:
            self._worker.quit()
            self._set_state(JobState.CANCELLING)

    def stop(self) -> None:
        """Stop the running job silently (stale request, widget closed)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.quit()
        self._close_bar()
        if self.state.busy:
            self.state = JobState.IDLE

    def _set_state(self, state: JobState) -> None:
        self.state = state
        self._on_state(state)

    def _yielded(
        self,
        worker: GeneratorWorker,
        on_progress: Callable[[Progress], None] | None,
        step: Progress,
    ) -> None:
        if worker is not self._worker:
            return
        if self._progress_bar:
            self._advance_bar(step)
        if on_progress is not None:
            on_progress(step)

    def _advance_bar(self, step: Progress) -> None:
        total = max(int(step.total), 1)
        if self._pbar is None:
            self._pbar = progress(total=total, desc=self.description)
        elif self._pbar.total != total:
            self._pbar.total = total
        self._pbar.update(max(int(step.done) - self._pbar.n, 0))

    def _returned(
        self, worker: GeneratorWorker, on_result: Callable[[Any], None], value: Any
    ) -> None:
        if worker is not self._worker or self.state is JobState.CANCELLING:
            return  # a result that arrives after Cancel is dropped; `_finished` ends the job
        if isinstance(value, Failure):
            if value.cancelled:
                self._notify_cancelled(value.message)
            else:
                show_error(value.message)
                self._set_state(JobState.FAILED)
            return
        on_result(value)
        self._set_state(JobState.DONE)

    def _warned(self, worker: GeneratorWorker, warning: tuple) -> None:
        """Show the engine's warnings (e.g. a fallback to the CPU), each once a widget: napari's
        own relay of worker warnings is not connected for generator workers."""
        from allinone.errors import AllInOneWarning

        message, category = f"{self.description}: {warning[0]}", warning[1]
        if not issubclass(category, AllInOneWarning):
            return
        if worker is self._worker and message not in self._warnings_shown:
            self._warnings_shown.add(message)
            show_warning(message)

    def _errored(self, worker: GeneratorWorker, error: Exception) -> None:
        if worker is self._worker:
            self._set_state(JobState.FAILED)

    def _aborted(self, worker: GeneratorWorker) -> None:
        if worker is self._worker:
            self._notify_cancelled(f"{self.description}: cancelled.")

    def _notify_cancelled(self, message: str) -> None:
        if not self._quiet:
            show_info(message)
        self._set_state(JobState.IDLE)

    def _finished(self, worker: GeneratorWorker) -> None:
        if worker is self._worker:
            self._worker = None
            self._close_bar()
            if self.state is JobState.CANCELLING:
                # cancelled during its last step: the worker emitted neither returned nor aborted
                self._notify_cancelled(f"{self.description}: cancelled.")

    def _close_bar(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
