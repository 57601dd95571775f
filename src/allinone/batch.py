"""Restore many files on a dask.distributed cluster (`allinone batch`).

Each worker loads the model once (kept in `_RESTORERS`, keyed by model, device and precision) and
restores whole files, one at a time. Where CUDA is present, a worker asked for `auto` or `cuda`
uses the GPU of its index (`cuda:N` for the worker named N; a cluster whose workers each see one
GPU through CUDA_VISIBLE_DEVICES works as is). Outputs are written atomically (`allinone.io`), so
an output that exists is complete: a re-run skips it unless told to overwrite. Failed files are
retried, then reported with their error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from allinone.errors import AllInOneError, InputError
from allinone.heap import return_large_buffers
from allinone.infer.normalize import check_dtype
from allinone.infer.options import RestoreOptions
from allinone.io import check_format, ensure_writable, image_output, read_image, result_like

if TYPE_CHECKING:
    from distributed import Client

    from allinone.infer.restorer import Restorer

_RESTORERS: dict[tuple[str, str, str], Restorer] = {}
_RESTORERS_LOCK = threading.Lock()
_WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""Local workers keep glibc's adaptive malloc: dask's default MALLOC_TRIM_THRESHOLD_ fixes the
thresholds, so every large tensor is mmapped and unmapped afresh (3x slower restores, mostly in
the kernel, measured on 256² files)."""


@dataclass(frozen=True)
class BatchOptions:
    """How every file is restored."""

    model: str = "default"
    device: str = "auto"
    precision: str = "auto"
    axes: str | None = None
    restore: RestoreOptions = field(default_factory=RestoreOptions)
    """How each file is restored (the restore chain's switches, tiling)."""
    torch_threads: int | None = None
    """CPU threads a worker's torch uses (local worker processes start with one: `run_batch`
    shares the CPUs among them)."""


@dataclass
class BatchReport:
    """What a batch did: outputs written, outputs skipped (present), and failures."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def plan_outputs(
    inputs: Sequence[str | os.PathLike], outdir: Path, overwrite: bool = False
) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(input, output) pairs to restore, and the outputs skipped because they exist already."""
    todo, skipped = [], []
    names: dict[str, Path] = {}
    for source in map(Path, inputs):
        if source.name in names:
            raise InputError(
                f"{source} and {names[source.name]} would both be written to "
                f"{outdir / source.name}; restore them into different folders"
            )
        names[source.name] = source
        output = ensure_writable(outdir / source.name, inputs=[source], overwrite=True)
        if output.exists() and not overwrite:
            skipped.append(output)
        else:
            todo.append((source, output))
    return todo, skipped


def worker_device(device: str) -> str:
    """`device`, with `auto` and `cuda` made `cuda:N` for the worker of index N when CUDA exists."""
    import torch

    count = torch.cuda.device_count()
    if device not in ("auto", "cuda") or count == 0:
        return device
    return f"cuda:{_worker_index() % count}"


def _worker_index() -> int:
    from distributed import get_worker

    try:
        name = get_worker().name
    except ValueError:
        return 0
    return name if isinstance(name, int) else 0


def restorer_for(model: str, device: str, precision: str) -> Restorer:
    """This process's Restorer for (model, device, precision), loaded on first use."""
    from allinone.infer.restorer import Restorer

    key = (model, device, precision)
    with _RESTORERS_LOCK:
        if key not in _RESTORERS:
            _RESTORERS[key] = Restorer.from_pretrained(model, device=device, precision=precision)
        return _RESTORERS[key]


def restore_file(source: str, output: str, options: BatchOptions) -> str:
    """Restore the file `source` into `output` (runs on a worker); return `output`."""
    import torch

    if options.torch_threads:
        torch.set_num_threads(options.torch_threads)
    return_large_buffers()
    image = read_image(source, lazy=True)
    check_dtype(image.array.dtype)
    axes = options.axes or image.axes
    like = result_like(image.array, options.restore.output_dtype(image.array.dtype))
    check_format(output, like, axes)
    restorer = restorer_for(options.model, worker_device(options.device), options.precision)
    with image_output(output, like, axes=axes, metadata=image.metadata, overwrite=True) as out:
        restorer.restore(image.array, axes=axes, out=out, options=options.restore)
    return output


def default_workers() -> int:
    """One worker a GPU, or one on a machine without CUDA."""
    import torch

    return max(1, torch.cuda.device_count())


@contextlib.contextmanager
def cluster_client(scheduler: str | None, workers: int, processes: bool = True) -> Iterator[Client]:
    """A client of the cluster at `scheduler`, or of a new local cluster of `workers` workers."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    with dask.config.set(_WORKER_ENVIRON):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=processes,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
    with cluster, Client(cluster) as client:
        yield client


def _describe(error: BaseException) -> str:
    if isinstance(error, AllInOneError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def run_batch(
    inputs: Sequence[str | os.PathLike],
    outdir: str | os.PathLike,
    options: BatchOptions = BatchOptions(),
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    retries: int = 1,
    processes: bool = True,
    on_done: Callable[[Path, str | None], None] | None = None,
) -> BatchReport:
    """Restore `inputs` into `outdir` (same file names) on a cluster; see the module docstring.

    `on_done(input, error)` is called as each file finishes (`error` None on success).
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    todo, skipped = plan_outputs(inputs, outdir, overwrite)
    report = BatchReport(skipped=skipped)
    if not todo:
        return report
    workers = workers or default_workers()
    if scheduler is None and processes and options.torch_threads is None:
        options = _with_threads(options, workers)
    from distributed import as_completed

    with cluster_client(scheduler, workers, processes) as client:
        futures = {
            client.submit(restore_file, str(s), str(o), options, retries=retries, pure=False): s
            for s, o in todo
        }
        for future in as_completed(futures):
            source = futures[future]
            error = future.exception() if future.status == "error" else None
            if error is None:
                report.written.append(Path(future.result()))
            else:
                report.failed.append((source, _describe(error)))
            if on_done is not None:
                on_done(source, None if error is None else _describe(error))
    return report


def _with_threads(options: BatchOptions, workers: int) -> BatchOptions:
    return replace(options, torch_threads=max(1, (os.cpu_count() or 1) // workers))
