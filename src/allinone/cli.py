"""The `allinone` command line.

Each subcommand is one parser block in `build_parser` plus one `_cmd_<name>(args) -> int` function
registered in `COMMANDS`. Heavy modules (torch, the Restorer) are imported inside the command
functions, so `allinone --help` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from allinone import __version__
from allinone.errors import AllInOneError, InputError, OutputExistsError
from allinone.infer.normalize import SCALINGS
from allinone.types import DEGRADATIONS

if TYPE_CHECKING:
    from allinone.infer.restorer import Composition, Restorer

ProgressCallback = Callable[[int, int], None]
DOMINANT_THRESHOLD = 0.5
"""A degradation is reported as dominant when its probability reaches this value."""


# --- argument types -------------------------------------------------------------------------------


def _roi(text: str) -> tuple[int, int, int, int]:
    """`Y0:Y1,X0:X1` → (y0, y1, x0, x1)."""
    try:
        rows, cols = text.split(",")
        y0, y1 = (int(v) for v in rows.split(":"))
        x0, x1 = (int(v) for v in cols.split(":"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rectangle Y0:Y1,X0:X1") from error
    return y0, y1, x0, x1


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, not {text}")
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one name, comma-separated")
    return names


def _sizes(text: str) -> list[int]:
    return [_positive_int(size) for size in _names(text)]


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _axes(text: str) -> str:
    return text.strip().upper()


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        metavar="NAME|PATH",
        help="a model name (see `allinone models`) or a .safetensors file (default: default)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (default: auto)",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
        help="arithmetic precision on the device (default: auto = bf16 on CUDA and on CPUs with "
        "native bf16, else fp32)",
    )
    parser.add_argument(
        "--axes",
        type=_axes,
        metavar="AXES",
        help="the image's axes from TZCYX, e.g. ZYX or YXC (default: from the file, or guessed)",
    )
    parser.add_argument(
        "--scaling",
        choices=SCALINGS,
        default="auto",
        help="intensity scaling: percentile keeps the exposure (microscopy), range lets the model "
        "correct it (under-exposed images; a colour photo's estimated darkening undone first); "
        "auto = percentile, after undoing the darkening of an 8-bit colour photo that reads as "
        "under-exposed",
    )


def _add_restore_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile",
        type=_positive_int,
        metavar="N",
        help="process N x N tiles (default: chosen from the image size and the device)",
    )
    parser.add_argument(
        "--overlap",
        type=_non_negative_int,
        default=32,
        metavar="N",
        help="overlap between tiles in pixels (default: 32)",
    )
    parser.add_argument(
        "--ensemble",
        action="store_true",
        help="average the 8 flips and rotations of each tile: better, and 8x slower",
    )
    parser.add_argument(
        "--scene-haze",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first remove haze judged on a small overview of each plane, which tiles alone miss "
        "in large images (default: on)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="allinone",
        description="All-in-one image restoration: noise, blur, haze, rain, low light and "
        "downsampling, from one model.",
        epilog="train, train-exposure, train-composition, eval and bench are for maintainers: "
        "they train the shipped weights and reproduce benchmarks/ (docs/TRAINING.md). "
        "`allinone COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    restore = commands.add_parser(
        "restore",
        help="restore an image and write the result",
        description="Restore INPUT (TIFF, PNG, JPEG, or an OME-Zarr store) and write OUTPUT with "
        "the same dtype, axes and metadata. The output format follows OUTPUT's extension. TIFF "
        "and OME-Zarr are read and written a tile at a time, so they may be larger than memory.",
    )
    restore.add_argument("input", metavar="INPUT", help="the image to restore")
    restore.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTPUT",
        help="a .tif, .png, .jpg or .ome.zarr path",
    )
    _add_model_options(restore)
    _add_restore_options(restore)
    restore.add_argument(
        "--learn-noise",
        type=_positive_float,
        metavar="S",
        help="first fine-tune a copy of the model on INPUT's own noise for S seconds "
        "(self-supervised, as `finetune` without --target): for noise independent from pixel to "
        "pixel, such as a microscope's photon and read noise",
    )
    restore.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")

    analyze = commands.add_parser(
        "analyze",
        help="estimate which degradations an image contains",
        description="Print the probability of each degradation type in INPUT.",
    )
    analyze.add_argument("input", metavar="INPUT", help="the image to analyse")
    _add_model_options(analyze)
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average over the image and its three flips (default; --no-flips: 4x faster)",
    )

    finetune = commands.add_parser(
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
    finetune.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="DEGRADED",
        help="a degraded image (repeat for more images, each with its --target)",
    )
    finetune.add_argument(
        "--target",
        action="append",
        metavar="CLEAN",
        help="the clean image that goes with each --input, same shape; leave out every --target "
        "to learn from the noise of the inputs alone",
    )
    finetune.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT", help="the new model's .safetensors file"
    )
    _add_model_options(finetune)
    finetune.add_argument(
        "--roi",
        action="append",
        type=_roi,
        metavar="Y0:Y1,X0:X1",
        help="train and validate inside this rectangle only (repeat for more; default: whole "
        "images)",
    )
    budget = finetune.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, metavar="N", help="default: 200 steps")
    budget.add_argument("--seconds", type=_positive_float, metavar="S", help="stop after S seconds")
    finetune.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        metavar="F",
        help="share of each region held out for validation, 0 for none (default: 0.2)",
    )
    finetune.add_argument(
        "--lr", type=_positive_float, default=1e-3, metavar="LR", help="default: 0.001"
    )
    finetune.add_argument(
        "--adapt",
        choices=("all", "degradation"),
        default="all",
        help="train every parameter, or only the degradation modules (default: all)",
    )
    finetune.add_argument(
        "--patch-size", type=_positive_int, default=64, metavar="N", help="default: 64"
    )
    finetune.add_argument(
        "--batch-size", type=_positive_int, default=8, metavar="N", help="default: 8"
    )
    finetune.add_argument("--seed", type=int, default=0, metavar="N", help="default: 0")
    finetune.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    finetune.add_argument("--json", action="store_true", help="print a JSON summary")

    batch = commands.add_parser(
        "batch",
        help="restore many files on a dask cluster",
        description="Restore each INPUT into OUTDIR (same file name, dtype, axes and metadata) "
        "with dask.distributed: a local cluster by default, or the one at --scheduler. Outputs "
        "that exist are complete (writes are atomic) and are skipped unless --overwrite.",
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="the images to restore")
    batch.add_argument("-o", "--outdir", required=True, metavar="OUTDIR", help="output folder")
    _add_model_options(batch)
    _add_restore_options(batch)
    batch.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing cluster, e.g. tcp://host:8786"
    )
    batch.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="local worker processes, 1 thread each (default: one a GPU, else 1)",
    )
    batch.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    batch.add_argument(
        "--retries",
        type=_non_negative_int,
        default=1,
        metavar="N",
        help="retry a failed file N times (default: 1)",
    )

    commands.add_parser(
        "models", help="list the available models", description="List the available models."
    )

    export = commands.add_parser(
        "export",
        help="write a model as a bioimage.io package, for deepImageJ, ilastik and others",
        description="Write --model as a bioimage.io model package (spec 0.5: PyTorch state dict "
        "and TorchScript weights, test tensors, citations, documentation). The package runs the "
        "network on one grey tile scaled to [0, 1]; tiling, intensity scaling, tone keeping and "
        "composition are this plugin's own. Needs the bioimageio extra "
        "(pip install 'napari-allinone[bioimageio]').",
    )
    export.add_argument("--format", choices=("bioimageio",), default="bioimageio")
    export.add_argument("-o", "--output", required=True, metavar="MODEL.zip")
    export.add_argument("--model", default="default", metavar="NAME|PATH", help="default: default")
    export.add_argument(
        "--tile", type=_positive_int, default=256, metavar="N", help="tile size (default: 256)"
    )
    export.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")

    train = commands.add_parser(
        "train",
        help="train (or continue training) a model on synthesised degradations",
        description="Train a preset with NDR's bidirectional optimisation. A run resumes "
        "exactly from the checkpoint in OUT when there is one. Launched by torchrun "
        "(torchrun --nproc_per_node=N -m allinone.cli train ...), each process trains a "
        "DistributedDataParallel replica on its own data stream.",
    )
    train.add_argument("--config", required=True, metavar="JSON", help="e.g. configs/small.json")
    train.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log)")
    train.add_argument("--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA)")
    train.add_argument("--device", default="auto", metavar="DEVICE", help="default: auto")
    train.add_argument("--steps", type=_positive_int, metavar="N", help="override the config")
    train.add_argument("--seconds", type=float, metavar="S", help="stop (resumably) after S s")
    train.add_argument(
        "--fit-steps",
        action="store_true",
        help="with --seconds: time the first 50 steps, then set the config's steps so that the "
        "learning rate finishes its schedule as the S seconds run out",
    )
    train.add_argument("--export", metavar="PATH", help="save the model here when done")
    train.add_argument("--description", default="", help="the exported model card's description")

    exposure = commands.add_parser(
        "train-exposure",
        help="train the exposure estimator that auto scaling uses on 8-bit colour photos",
        description="Train the exposure estimator (allinone.models.exposure) on the training "
        "photos, on the CPU (a few minutes), and save it as safetensors.",
    )
    exposure.add_argument("--out", required=True, metavar="PATH", help="the .safetensors to write")
    exposure.add_argument("--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA)")
    exposure.add_argument("--steps", type=_positive_int, default=3000, metavar="N")
    exposure.add_argument("--seed", type=int, default=0, metavar="N")

    head = commands.add_parser(
        "train-composition",
        help="retrain a model's composition head, the rest of the network frozen",
        description="Retrain the composition head of --model on the training data (see "
        "allinone.train.composition), on the CPU, and save the model with the new head.",
    )
    head.add_argument("--model", default="default", metavar="NAME|PATH", help="default: default")
    head.add_argument("--out", required=True, metavar="PATH", help="the new model's .safetensors")
    head.add_argument("--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA)")
    head.add_argument("--steps", type=_positive_int, default=2000, metavar="N")
    head.add_argument("--patch-size", type=_positive_int, default=128, metavar="N")
    head.add_argument("--seed", type=int, default=0, metavar="N")
    head.add_argument("--overwrite", action="store_true", help="replace an existing model")

    evaluate = commands.add_parser(
        "eval",
        help="measure restoration quality on the benchmark sets",
        description="Run the quality protocols (see src/allinone/evaluate.py) on the model and "
        "the classical baselines, and write a Markdown report.",
    )
    evaluate.add_argument(
        "--model", default="default", metavar="NAME|PATH", help="default: default"
    )
    evaluate.add_argument(
        "--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA, else ../shared/data)"
    )
    evaluate.add_argument(
        "--tasks",
        default="all",
        metavar="LIST",
        help="all, or some of denoise,derain,dehaze,hazephotos,sr,deblur,lowlight,fmd,"
        "fluorescence,composition",
    )
    evaluate.add_argument(
        "--limit", type=_positive_int, metavar="N", help="at most N images per set (default: all)"
    )
    evaluate.add_argument("--device", default="auto", metavar="DEVICE", help="default: auto")
    evaluate.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the slow classical baselines (CBM3D, Richardson-Lucy, ...; default: on)",
    )
    evaluate.add_argument(
        "--output", default="benchmarks/RESULTS.md", metavar="MD", help="the Markdown report"
    )
    evaluate.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    evaluate.add_argument(
        "--ensemble", action="store_true", help="restore with the 8-view self-ensemble"
    )
    evaluate.add_argument(
        "--adapt-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="microscopy tasks: seconds of self-supervised training per image for the adapted "
        "model and the network trained from scratch (0: neither; default: 60)",
    )

    bench = commands.add_parser(
        "bench",
        help="measure throughput and memory",
        description="Measure restoration throughput (megapixels/s), peak memory, tiling "
        "overhead, FLOPs a pixel and the fraction of the GPU's bf16 peak, for each model, "
        "device, precision and image size, plus a stack of slices; print a Markdown table.",
    )
    bench.add_argument(
        "--presets",
        type=_names,
        default=["default", "small", "paper"],
        metavar="LIST",
        help="models or presets; ratios are to the first (default: default,small,paper)",
    )
    bench.add_argument(
        "--devices", type=_names, default=["auto"], metavar="LIST", help="e.g. cpu,cuda"
    )
    bench.add_argument(
        "--precisions",
        type=_names,
        default=["fp32", "bf16"],
        metavar="LIST",
        help="fp32, bf16, fp16 (fp16 on CUDA only; bf16 on CUDA and bf16-capable CPUs)",
    )
    bench.add_argument(
        "--sizes",
        type=_sizes,
        default=[256, 512, 1024, 2048, 4096],
        metavar="LIST",
        help="square image sizes; keep them small on a CPU (default: 256,...,4096)",
    )
    bench.add_argument(
        "--stack",
        type=_non_negative_int,
        default=64,
        metavar="N",
        help="also a stack of N slices of the smallest size (0: none; default: 64)",
    )
    bench.add_argument(
        "--tile", type=_positive_int, metavar="N", help="tile size (default: the device's)"
    )
    bench.add_argument(
        "--repeats", type=_positive_int, default=3, metavar="N", help="timed runs (default: 3)"
    )
    bench.add_argument("--compile", action="store_true", help="torch.compile the network")
    bench.add_argument("--output", metavar="MD", help="also write the table to this file")
    return parser


# --- commands ---------------------------------------------------------------------------------


def _cmd_restore(args: argparse.Namespace) -> int:
    from allinone.infer.axes import normalize_axes
    from allinone.io import check_format, ensure_writable, image_output, read_image

    output = ensure_writable(args.output, inputs=[args.input], overwrite=args.overwrite)
    image = read_image(args.input, lazy=True)
    axes = args.axes or image.axes
    if axes is not None:
        axes = normalize_axes(axes, image.array.shape)
    check_format(output, image.array, axes)
    restorer = _load_restorer(args)
    if args.learn_noise:
        with _progress("learning the noise") as progress:
            adaptation = restorer.finetune(
                [(image.array, None)],
                axes=axes,
                seconds=args.learn_noise,
                progress=progress,
                scaling=args.scaling,
            )
        print(_adaptation_summary(adaptation), file=sys.stderr)
        restorer = adaptation.restorer
    destination = image_output(
        output, image.array, axes=axes, metadata=image.metadata, overwrite=args.overwrite
    )
    with _progress("restoring") as progress, destination as out:
        restorer.restore(
            image.array,
            axes=axes,
            tile=args.tile,
            overlap=args.overlap,
            progress=progress,
            scaling=args.scaling,
            ensemble=args.ensemble,
            scene_haze=args.scene_haze,
            out=out,
        )
    print(f"wrote {output}", file=sys.stderr)
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from allinone.io import read_image

    image = read_image(args.input)
    restorer = _load_restorer(args)
    with _progress("analysing") as progress:
        composition = restorer.analyze(
            image.array,
            axes=args.axes or image.axes,
            progress=progress,
            scaling=args.scaling,
            flips=args.flips,
        )
    probabilities = {name: float(composition.probabilities[name]) for name in DEGRADATIONS}
    dominant = composition.dominant(DOMINANT_THRESHOLD)
    if args.json:
        report = {
            "input": args.input,
            "model": restorer.card.name,
            "composition": probabilities,
            "dominant": dominant,
            "noise_level": composition.noise_level,
            "under_exposure_stops": composition.under_exposure,
        }
        print(json.dumps(report))
    else:
        print(_composition_table(args.input, restorer.card.name, composition, dominant))
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from allinone.weights import list_models

    entries = list_models()
    width = max((len(entry.name) for entry in entries), default=0)
    for entry in entries:
        where = f"  [{entry.path}]" if entry.path else ""
        print(f"{entry.name:<{width}}  {entry.source:<7}  {entry.description}{where}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import importlib.util

    from allinone.export_bioimageio import export_bioimageio

    if importlib.util.find_spec("bioimageio") is None:
        raise InputError(
            "export needs the bioimageio extra: pip install 'napari-allinone[bioimageio]'"
        )
    from allinone.infer.restorer import Restorer

    restorer = Restorer.from_pretrained(args.model, device="cpu")
    path = export_bioimageio(restorer, Path(args.output), tile=args.tile, overwrite=args.overwrite)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from allinone.devices import resolve_device
    from allinone.train.loop import TrainConfig, Trainer

    config = TrainConfig.from_file(args.config, steps=args.steps)
    if args.fit_steps and args.seconds is None:
        raise InputError("--fit-steps needs --seconds")
    trainer = Trainer(config, Path(args.out), data=args.data, device=resolve_device(args.device))
    try:
        if trainer.is_main:
            ranks = (
                f" on {trainer.dist.world_size} processes" if trainer.dist.world_size > 1 else ""
            )
            last = "a step set by --fit-steps" if args.fit_steps else f"step {config.steps}"
            _print_line(f"training {config.preset} from step {trainer.step} to {last}{ranks}")
        pace = _TrainingPace(trainer.step, config.steps, args.seconds)
        seconds = args.seconds
        if args.fit_steps:
            seconds = trainer.fit_steps(args.seconds, report=pace.report)
            pace.until = trainer.config.steps
            if trainer.is_main:
                _print_line(f"steps set to {pace.until} to finish within {args.seconds:g} s")
        trainer.run(seconds=seconds, report=pace.report)
        if args.export and trainer.is_main:
            name = Path(args.export).stem
            path = trainer.export(Path(args.export), name=name, description=args.description)
            _print_line(f"exported {path}")
    finally:
        trainer.close()
    return 0


def _cmd_train_exposure(args: argparse.Namespace) -> int:
    from allinone.models.exposure import save_estimator
    from allinone.train.data import data_root
    from allinone.train.exposure import train_from_data

    def report(record) -> None:
        _print_line(f"step {record.step} loss={record.loss:.4f} val_psnr={record.val_psnr:.2f}")

    root = data_root(args.data)
    net, training = train_from_data(root, args.steps, seed=args.seed, on_record=report)
    _print_line(f"saved {save_estimator(net, Path(args.out), training)}")
    return 0


def _cmd_train_composition(args: argparse.Namespace) -> int:
    from allinone.infer.restorer import Restorer
    from allinone.train.composition import HeadConfig, retrain_from_data
    from allinone.train.data import data_root

    def report(record) -> None:
        if record.val_loss is not None:
            _print_line(
                f"step {record.step} loss={record.loss:.4f} val_loss={record.val_loss:.4f} "
                f"val_top1={100 * record.val_top1:.1f}%"
            )

    output = _model_output(args.out, args.overwrite)
    restorer = Restorer.from_pretrained(args.model, device="cpu")
    config = HeadConfig(steps=args.steps, patch_size=args.patch_size, seed=args.seed)
    retrained = retrain_from_data(restorer, data_root(args.data), config, report)
    _print_line(f"saved {retrained.save(output)}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from allinone.evaluate import Context, evaluate, parse_tasks, provenance, to_markdown
    from allinone.infer.restorer import Restorer
    from allinone.train.data import data_root

    tasks = parse_tasks(args.tasks)
    root = data_root(args.data)
    restorer = Restorer.from_pretrained(args.model, device=args.device)
    command = " ".join(
        ["allinone eval", f"--model {args.model}", f"--tasks {','.join(tasks)}"]
        + ([f"--limit {args.limit}"] if args.limit else [])
        + ([] if args.baselines else ["--no-baselines"])
        + (["--ensemble"] if args.ensemble else [])
        + [f"--adapt-seconds {args.adapt_seconds:g}"]
    )
    context = Context(
        restorer, root, args.limit, args.baselines, _print_line, args.ensemble, args.adapt_seconds
    )
    report = evaluate(context, tasks, provenance(restorer, root, command, args.limit))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(to_markdown(report), encoding="utf-8")
    print(f"wrote {output}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(report.to_json(), encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from allinone.batch import BatchOptions, run_batch

    options = BatchOptions(
        model=args.model,
        device=args.device,
        precision=args.precision,
        axes=args.axes,
        tile=args.tile,
        overlap=args.overlap,
        scaling=args.scaling,
        ensemble=args.ensemble,
        scene_haze=args.scene_haze,
    )

    def done(source: Path, error: str | None) -> None:
        _print_line(f"failed {source}: {error}" if error else f"restored {source}")

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
        _print_line(f"skipped {output} (it exists; --overwrite redoes it)")
    _print_line(
        f"{len(report.written)} restored, {len(report.skipped)} skipped, "
        f"{len(report.failed)} failed"
    )
    return 1 if report.failed else 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from allinone.bench import BenchConfig, run_bench, to_markdown

    config = BenchConfig(
        models=args.presets,
        devices=args.devices,
        precisions=args.precisions,
        sizes=args.sizes,
        stack=args.stack,
        repeats=args.repeats,
        tile=args.tile,
        compile=args.compile,
        log=_print_line,
    )
    rows, skipped = run_bench(config)
    report = to_markdown(rows, skipped, config, "allinone " + " ".join(sys.argv[1:]))
    print(report)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report, encoding="utf-8")
        _print_line(f"wrote {output}")
    return 0 if rows else 1


def _cmd_finetune(args: argparse.Namespace) -> int:
    from allinone.io import read_image

    targets = args.target or [None] * len(args.input)
    if len(args.input) != len(targets):
        raise InputError(
            f"{len(args.input)} --input but {len(targets)} --target: give one clean --target "
            "for each degraded --input, or none to learn from the noise alone"
        )
    output = _model_output(args.output, args.overwrite)
    degraded = [read_image(path) for path in args.input]
    pairs = [
        (d.array, None if c is None else read_image(c).array)
        for d, c in zip(degraded, targets, strict=True)
    ]
    restorer = _load_restorer(args)
    job = restorer.finetune_steps(
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
        scaling=args.scaling,
    )
    while True:
        try:
            update = next(job)
        except StopIteration as stop:
            result = stop.value
            break
        if "val_psnr" in update.metrics:
            _print_line(_record_text(update.metrics))
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


def _print_line(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _record_text(record: dict) -> str:
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
    )


class _TrainingPace:
    """Prints a training run's records (every 50th step and each validation) with its pace and
    the time left, to the last step or to the `seconds` budget, whichever comes first."""

    def __init__(self, step: int, until: int, seconds: float | None) -> None:
        self.first, self.until, self.seconds = step, until, seconds
        self.start = time.monotonic()

    def line(self, record: dict, elapsed: float) -> str:
        """The record, then its seconds a step so far and the time left."""
        per_step = elapsed / max(1, record["step"] - self.first)
        left = max(0, self.until - record["step"]) * per_step
        if self.seconds is not None:
            left = min(left, max(0.0, self.seconds - elapsed))
        clock = dt.timedelta(seconds=round(left))
        return f"{_record_text(record)} ({per_step:.3g} s/step, {clock} left)"

    def report(self, record: dict) -> None:
        """`Trainer.run`'s report callback."""
        if "val_psnr" in record or record["step"] % 50 == 0:
            _print_line(self.line(record, time.monotonic() - self.start))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "restore": _cmd_restore,
    "analyze": _cmd_analyze,
    "models": _cmd_models,
    "export": _cmd_export,
    "train": _cmd_train,
    "train-exposure": _cmd_train_exposure,
    "train-composition": _cmd_train_composition,
    "eval": _cmd_eval,
    "batch": _cmd_batch,
    "finetune": _cmd_finetune,
    "bench": _cmd_bench,
}


# --- helpers ----------------------------------------------------------------------------------


def _load_restorer(args: argparse.Namespace) -> Restorer:
    from allinone.infer.restorer import Restorer

    return Restorer.from_pretrained(args.model, device=args.device, precision=args.precision)


def _model_output(text: str, overwrite: bool) -> Path:
    """The weights path a model is saved to, refused early when it or its card exists."""
    from allinone.weights import card_path

    path = Path(text)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    for target in (path, card_path(path)):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it.")
    return path


def _finetune_summary(result, parent: str) -> str:
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


def _adaptation_summary(result) -> str:
    """What `restore --learn-noise` did: which weights restore the image, and why."""
    head = f"learnt the noise for {result.steps} steps ({result.seconds:.1f} s): "
    if result.psnr_before is None:
        return head + "restoring with the adapted weights"
    if not result.improved:
        return head + (
            "the adapted weights did not beat the original ones on held-out pixels; "
            "restoring with the original weights"
        )
    return head + (
        f"held-out pixels {result.psnr_before:.2f} -> {result.psnr_after:.2f} dB; "
        "restoring with the adapted weights"
    )


@contextlib.contextmanager
def _progress(label: str) -> Iterator[ProgressCallback | None]:
    """A one-line progress display on stderr when it is a terminal; None otherwise."""
    stream = sys.stderr
    if not stream.isatty():
        yield None
        return

    def show(done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        stream.write(f"\r{label}: {done}/{total} ({percent}%)")
        stream.flush()

    try:
        yield show
    finally:
        stream.write("\n")
        stream.flush()


def _composition_table(
    source: str, model: str, composition: Composition, dominant: str | None
) -> str:
    width = max(len(name) for name in DEGRADATIONS)
    lines = [f"{source} (model: {model})"]
    for name in DEGRADATIONS:
        probability = composition.probabilities[name]
        filled = round(probability * 20)
        bar = "#" * filled + "." * (20 - filled)
        lines.append(f"  {name:<{width}}  {probability:4.2f}  {bar}")
    level = composition.noise_level
    noise = "unknown" if level is None else f"sigma {level:.3g} (in the image's units)"
    lines.append(f"noise level: {noise}")
    if composition.under_exposure is not None:
        from allinone.infer.auto_exposure import describe

        lines.append(f"exposure: {describe(composition.under_exposure)}")
    lines.append(f"dominant: {dominant or f'none (all below {DOMINANT_THRESHOLD:.2f})'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a user error, 130 if interrupted)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return COMMANDS[args.command](args)
        except AllInOneError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Print a warning (e.g. a fallback to the CPU) as one `warning: ...` line."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
