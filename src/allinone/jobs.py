"""Long jobs as generators: what they report after each step, how they are cancelled, and how
one is run to its end with a callback.

Restore, analysis and fine-tuning each come as a `*_steps` generator that yields `Progress`;
the GUI runs it in a worker thread, the API and the CLI `drive` it.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol, TypeVar

from allinone.errors import Cancelled

__all__ = ["Cancel", "Progress", "ProgressCallback", "drive", "is_cancelled"]

Result = TypeVar("Result")


@dataclass
class Progress:
    """How far a job is: `done` of `total` units (tiles, or steps when fine-tuning)."""

    done: int
    total: int
    message: str = ""
    metrics: dict[str, float] | None = None


class _Event(Protocol):
    def is_set(self) -> bool: ...


Cancel = Callable[[], bool] | _Event | None
"""What asks a job to stop: a callable, an Event-like object, or None (never)."""

ProgressCallback = Callable[[int, int], None]
"""`progress(done, total)`, called after each step of a job."""


def is_cancelled(cancel: Cancel) -> bool:
    """True when `cancel` asks to stop."""
    if cancel is None:
        return False
    if hasattr(cancel, "is_set"):
        return bool(cancel.is_set())
    return bool(cancel())


def drive(
    steps: Generator[Progress, None, Result],
    progress: ProgressCallback | None = None,
    cancel: Cancel = None,
) -> Result:
    """Run a job generator to its end, reporting each `Progress` to `progress`; return its
    result. `cancel` is checked after each step: the job is closed and `Cancelled` raised."""
    while True:
        try:
            update = next(steps)
        except StopIteration as stop:
            return stop.value
        if progress is not None:
            progress(update.done, update.total)
        if is_cancelled(cancel):
            steps.close()
            raise Cancelled("cancelled; nothing was written")
