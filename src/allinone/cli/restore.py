"""`allinone restore`: restore one image and write the result."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from allinone.cli import common

if TYPE_CHECKING:
    from allinone.train.finetune import FinetuneResult


def register(commands: common.Commands) -> None:
    """Add the `restore` parser and its handler."""
    parser = commands.add_parser(
        "restore",
        help="restore an image and write the result",
        description="Restore INPUT (TIFF, PNG, JPEG, or an OME-Zarr store) and write OUTPUT with "
        "the same dtype (float32 with --float-output), axes and metadata. The output format "
        "follows OUTPUT's extension. TIFF and OME-Zarr are read and written a tile at a time, so "
        "they may be larger than memory.",
    )
    parser.add_argument("input", metavar="INPUT", help="the image to restore")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="a .tif, .png, .jpg or .ome.zarr path",
    )
    common.add_model_options(parser)
    common.add_restore_options(parser)
    parser.add_argument(
        "--learn-noise",
        type=common.positive_float,
        metavar="S",
        help="first fine-tune a copy of the model on INPUT's own noise for S seconds "
        "(self-supervised, as `finetune` without --target): for noise independent from pixel to "
        "pixel, such as a microscope's photon and read noise",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the output can be written, load the model, optionally learn the noise, restore."""
    from allinone.heap import return_large_buffers
    from allinone.infer.axes import normalize_axes
    from allinone.infer.normalize import check_dtype
    from allinone.io import check_format, ensure_writable, image_output, read_image, result_like

    output = ensure_writable(args.output, inputs=[args.input], overwrite=args.overwrite)
    return_large_buffers()
    image = read_image(args.input, lazy=True)
    check_dtype(image.array.dtype)
    axes = args.axes or image.axes
    if axes is not None:
        axes = normalize_axes(axes, image.array.shape)
    options = common.restore_options(args)
    like = result_like(image.array, options.output_dtype(image.array.dtype))
    check_format(output, like, axes)
    restorer = common.load_restorer(args)
    if args.learn_noise:
        from allinone.train.finetune import finetune

        with common.progress("learning the noise") as progress:
            adaptation = finetune(
                restorer,
                [(image.array, None)],
                axes=axes,
                seconds=args.learn_noise,
                progress=progress,
                options=options,
            )
        print(_adaptation_summary(adaptation), file=sys.stderr)
        restorer = adaptation.restorer
    destination = image_output(
        output, like, axes=axes, metadata=image.metadata, overwrite=args.overwrite
    )
    with common.progress("restoring") as progress, destination as out:
        restorer.restore(image.array, axes=axes, progress=progress, out=out, options=options)
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _adaptation_summary(result: FinetuneResult) -> str:
    """What `restore --learn-noise` did: which weights restore the image, and why."""
    head = f"learnt the noise for {result.steps} steps ({result.seconds:.1f} s): "
    if result.psnr_before is None:
        return head + "restoring with the adapted weights"
    if not result.improved:
        return head + (
            "the adapted weights did not beat the original ones on held-out pixels; "
            "restoring with the original weights"
        )
    weights = "the adapted weights"
    if result.share < 1:
        weights = f"{result.share:.0%} of the way from the original to the adapted weights"
    return head + (
        f"held-out pixels {result.psnr_before:.2f} -> {result.psnr_after:.2f} dB; "
        f"restoring with {weights}"
    )
