"""What the commands share: argument types, the model and tiling options, loading the model,
progress and log lines on stderr, and running a handler with its errors turned into exit codes."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from allinone.errors import AllInOneError, OutputExistsError
from allinone.infer.normalize import SCALINGS
from allinone.infer.options import RestoreOptions

if TYPE_CHECKING:
    from allinone.infer.restorer import Restorer

Commands = argparse._SubParsersAction
"""The `add_subparsers` action each command module adds its parser to."""
Handler = Callable[[argparse.Namespace], int]
"""A command: the parsed arguments in, the exit status out."""
ProgressCallback = Callable[[int, int], None]


# --- argument types -------------------------------------------------------------------------------


def roi(text: str) -> tuple[int, int, int, int]:
    """`Y0:Y1,X0:X1` → (y0, y1, x0, x1)."""
    try:
        rows, cols = text.split(",")
        y0, y1 = (int(v) for v in rows.split(":"))
        x0, x1 = (int(v) for v in cols.split(":"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rectangle Y0:Y1,X0:X1") from error
    return y0, y1, x0, x1


def positive_int(text: str) -> int:
    """An integer above zero."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def non_negative_int(text: str) -> int:
    """Zero or an integer above it."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or a positive integer, not {text}")
    return value


def names(text: str) -> list[str]:
    """A comma-separated list of at least one name."""
    found = [name.strip() for name in text.split(",") if name.strip()]
    if not found:
        raise argparse.ArgumentTypeError("give at least one name, comma-separated")
    return found


def sizes(text: str) -> list[int]:
    """A comma-separated list of positive integers."""
    return [positive_int(size) for size in names(text)]


def positive_float(text: str) -> float:
    """A finite number above zero."""
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def axes(text: str) -> str:
    """Axis letters, upper case."""
    return text.strip().upper()


# --- options --------------------------------------------------------------------------------------


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --precision, --axes and --scaling: which model reads the image, how."""
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
        type=axes,
        metavar="AXES",
        help="the image's axes from TZCYX, e.g. ZYX or YXC (default: from the file, or guessed)",
    )
    add_scaling_option(parser)


def add_scaling_option(parser: argparse.ArgumentParser) -> None:
    """--scaling: how intensities reach the network, and with it the exposure correction."""
    parser.add_argument(
        "--scaling",
        choices=SCALINGS,
        default="auto",
        help="intensity scaling: percentile keeps the exposure (microscopy), range lets the model "
        "correct it (under-exposed images; a colour photo's estimated darkening undone first); "
        "auto = percentile, after undoing the darkening of an 8-bit colour photo that reads as "
        "under-exposed",
    )


def add_restore_options(parser: argparse.ArgumentParser) -> None:
    """--tile, --overlap, the chain's switches and --float-output: how an image is restored
    (`RestoreOptions`; `restore_options` reads them back)."""
    parser.add_argument(
        "--tile",
        type=positive_int,
        metavar="N",
        help="process N x N tiles (default: chosen from the image size and the device)",
    )
    parser.add_argument(
        "--overlap",
        type=non_negative_int,
        default=32,
        metavar="N",
        help="overlap between tiles in pixels (default: 32)",
    )
    add_chain_switches(parser)
    add_float_output(parser)


def add_float_output(parser: argparse.ArgumentParser) -> None:
    """--float-output: float32 results for integer images (`RestoreOptions.float_output`)."""
    parser.add_argument(
        "--float-output",
        action="store_true",
        help="write integer images' results as float32, unrounded (TIFF or OME-Zarr): where the "
        "signal spans few levels of its dtype, rounding to it costs detail (default: keep the "
        "input's dtype)",
    )


def add_chain_switches(parser: argparse.ArgumentParser) -> None:
    """One switch per optional step of the restore chain (`allinone.infer.chain`)."""
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
    parser.add_argument(
        "--local-gain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="grey images scaled by their percentiles: lift dim regions far from any bright "
        "structure to the exposure the model knows, and back after (default: on)",
    )
    parser.add_argument(
        "--tone",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep each tile's local mean unless the model sees haze, rain or low light in it "
        "(default: on)",
    )
    parser.add_argument(
        "--clipping",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="take local means back through the clipping of noise at an integer dtype's ends "
        "before keeping them (default: on)",
    )


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """The `RestoreOptions` that the parsed switches name (those a command lacks at defaults)."""
    return RestoreOptions.from_names(vars(args))


def option_flags(options: RestoreOptions) -> list[str]:
    """The command-line flags that give `options` (`restore_options`' inverse): one for each
    field away from its default, in the fields' order."""
    flags = []
    for name, value in options.changed().items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags.append(f"--{flag} {value}")
    return flags


# --- models ---------------------------------------------------------------------------------------


def load_restorer(args: argparse.Namespace) -> Restorer:
    """The Restorer that --model, --device and --precision name."""
    from allinone.infer.restorer import Restorer

    return Restorer.from_pretrained(args.model, device=args.device, precision=args.precision)


def model_output(text: str, overwrite: bool) -> Path:
    """The weights path a model is saved to, refused early when it or its card exists."""
    from allinone.weights import card_path

    path = Path(text)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    for target in (path, card_path(path)):
        if target.exists() and not overwrite:
            raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it.")
    return path


# --- stderr ---------------------------------------------------------------------------------------


def print_line(message: str) -> None:
    """One log line on stderr, at once."""
    print(message, file=sys.stderr, flush=True)


def record_text(record: dict) -> str:
    """A training record as `key=value` pairs."""
    return " ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
    )


@contextlib.contextmanager
def progress(label: str) -> Iterator[ProgressCallback | None]:
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


# --- errors ---------------------------------------------------------------------------------------


def run_handler(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command; return its exit status, 2 for a user error, 130 if interrupted."""
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        try:
            return handler(args)
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
