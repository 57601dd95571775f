"""`allinone batch`: restore many files on a dask cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from allinone.cli import common


def register(commands: common.Commands) -> None:
    """Add the `batch` parser and its handler."""
    parser = commands.add_parser(
        "batch",
        help="restore many files on a dask cluster",
        description="Restore each INPUT into OUTDIR (same file name, dtype, axes and metadata) "
        "with dask.distributed: a local cluster by default, or the one at --scheduler. Outputs "
        "that exist are complete (writes are atomic) and are skipped unless --overwrite.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="the images to restore")
    parser.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder")
    common.add_model_options(parser)
    common.add_restore_options(parser)
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing cluster, e.g. tcp://host:8786"
    )
    parser.add_argument(
        "--workers",
        type=common.positive_int,
        metavar="N",
        help="local worker processes, 1 thread each (default: one a GPU, else 1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    parser.add_argument(
        "--retries",
        type=common.non_negative_int,
        default=1,
        metavar="N",
        help="retry a failed file N times (default: 1)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Restore every INPUT, reporting each file; 1 when any failed."""
    from allinone.batch import BatchOptions, run_batch

    options = BatchOptions(
        model=args.model,
        device=args.device,
        precision=args.precision,
        axes=args.axes,
        restore=common.restore_options(args),
    )

    def done(source: Path, error: str | None) -> None:
        common.print_line(f"failed {source}: {error}" if error else f"restored {source}")

    report = run_batch(
        args.inputs,
        args.outdir,
        options,
        scheduler=args.scheduler,
        workers=args.workers,
        overwrite=args.overwrite,
        retries=args.retries,
        on_done=done,
    )
    for output in report.skipped:
        common.print_line(f"skipped {output} (it exists; --overwrite redoes it)")
    common.print_line(
        f"{len(report.written)} restored, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed"
    )
    return 1 if report.failed else 0
