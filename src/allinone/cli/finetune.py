"""`allinone finetune`: adapt a model to degraded/clean pairs, or to noisy images alone."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator
from typing import TYPE_CHECKING

from allinone.cli import common
from allinone.errors import InputError

if TYPE_CHECKING:
    from allinone.jobs import Progress
    from allinone.train.finetune import FinetuneResult


def register(commands: common.Commands) -> None:
    """Add the `finetune` parser and its handler."""
    parser = commands.add_parser(
        "finetune",
        help="adapt a model to your own degraded/clean image pairs, or to noisy images alone",
        description="Fine-tune a copy of --model on one or more (DEGRADED, CLEAN) pairs of "
        "images of the same shape and save it to OUTPUT (.safetensors + .json card). A strip "
        "of each image (or --roi rectangle) is held out for validation; the weights with the best "
        "validation PSNR are kept. Without --target, the model learns to remove the noise of the "
        "--input images themselves (self-supervised, Neighbor2Neighbor): for noise independent "
        "from pixel to pixel, such as a microscope's photon and read noise; other degradations "
        "are then kept, and validation PSNR is measured against noisy pixels, so only its change "
        "means something.",
    )
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="DEGRADED",
        help="a degraded image (repeat for more images, each with its --target)",
    )
    parser.add_argument(
        "--target",
        action="append",
        metavar="CLEAN",
        help="the clean image that goes with each --input, same shape; leave out every --target "
        "to learn from the noise of the inputs alone",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="the new model's .safetensors file"
    )
    common.add_model_options(parser)
    parser.add_argument(
        "--roi",
        action="append",
        type=common.roi,
        metavar="Y0:Y1,X0:X1",
        help="train and validate inside this rectangle only (repeat for more; default: whole "
        "images)",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=common.positive_int, metavar="N", help="default: 200 steps")
    budget.add_argument(
        "--seconds", type=common.positive_float, metavar="S", help="stop after S seconds"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="share of each region held out for validation, 0 for none (default: 0.2)",
    )
    parser.add_argument(
        "--lr", type=common.positive_float, default=1e-3, metavar="LR", help="default: 0.001"
    )
    parser.add_argument(
        "--adapt",
        choices=("all", "degradation"),
        default="all",
        help="train every parameter, or only the degradation modules (default: all)",
    )
    parser.add_argument(
        "--patch-size", type=common.positive_int, default=64, metavar="N", help="default: 64"
    )
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=8, metavar="N", help="default: 8"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="default: 0")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Fine-tune, save the model and print what the fine-tuning achieved."""
    from allinone.infer.options import RestoreOptions
    from allinone.io import read_image
    from allinone.train.finetune import finetune_steps

    targets = args.target or [None] * len(args.input)
    if len(args.input) != len(targets):
        raise InputError(
            f"{len(args.input)} --input but {len(targets)} --target: give one clean --target "
            "for each degraded --input, or none to learn from the noise alone"
        )
    output = common.model_output(args.output, args.overwrite)
    degraded = [read_image(path) for path in args.input]
    pairs = [
        (d.array, None if c is None else read_image(c).array)
        for d, c in zip(degraded, targets, strict=True)
    ]
    restorer = common.load_restorer(args)
    job = finetune_steps(
        restorer,
        pairs,
        axes=args.axes or degraded[0].axes,
        rois=args.roi,
        steps=args.steps,
        seconds=args.seconds,
        val_fraction=args.val_fraction,
        lr=args.lr,
        adapt=args.adapt,
        patch_size=args.patch_size,
        batch_size=args.batch_size,
        seed=args.seed,
        options=RestoreOptions(scaling=args.scaling),
    )
    result = _follow(job)
    path = result.save(output)
    summary = {
        "output": str(path),
        "model": result.restorer.card.name,
        "parent": restorer.card.name,
        "steps": result.steps,
        "seconds": round(result.seconds, 3),
        "psnr_before": result.psnr_before,
        "psnr_after": result.psnr_after,
        "improved": result.improved,
        "self_supervised": result.self_supervised,
    }
    print(json.dumps(summary) if args.json else _finetune_summary(result, restorer.card.name))
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _follow(job: Generator[Progress, None, FinetuneResult]) -> FinetuneResult:
    """Run a fine-tuning job to its end, printing each validation; return its result."""
    while True:
        try:
            update = next(job)
        except StopIteration as stop:
            return stop.value
        if update.metrics and "val_psnr" in update.metrics:
            common.print_line(common.record_text(update.metrics))


def _finetune_summary(result: FinetuneResult, parent: str) -> str:
    """What the fine-tuning achieved, in one line."""
    head = f"fine-tuned {parent} for {result.steps} steps ({result.seconds:.1f} s): "
    if result.psnr_before is None:
        return head + "no validation (--val-fraction 0)"
    if not result.improved:
        return head + (
            f"validation PSNR never beat the original model's {result.psnr_before:.2f} dB; "
            "the saved weights are the original ones"
        )
    change = f"validation PSNR {result.psnr_before:.2f} -> {result.psnr_after:.2f} dB"
    if result.self_supervised:
        change += " (self-supervised: measured against noisy pixels, so only the change counts)"
    return head + change
