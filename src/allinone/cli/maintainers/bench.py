"""`allinone bench`: throughput and memory, as a Markdown table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allinone.cli import common


def register(commands: common.Commands) -> None:
    """Add the `bench` parser and its handler."""
    parser = commands.add_parser(
        "bench",
        help="measure throughput and memory",
        description="Measure restoration throughput (megapixels/s), peak memory, tiling "
        "overhead, FLOPs a pixel and the fraction of the GPU's bf16 peak, for each model, "
        "device, precision and image size, plus a stack of slices; print a Markdown table.",
    )
    parser.add_argument(
        "--presets",
        type=common.names,
        default=["default", "small", "paper"],
        metavar="LIST",
        help="models or presets; ratios are to the first (default: default,small,paper)",
    )
    parser.add_argument(
        "--devices", type=common.names, default=["auto"], metavar="LIST", help="e.g. cpu,cuda"
    )
    parser.add_argument(
        "--precisions",
        type=common.names,
        default=["fp32", "bf16"],
        metavar="LIST",
        help="fp32, bf16, fp16 (fp16 on CUDA only; bf16 on CUDA and bf16-capable CPUs)",
    )
    parser.add_argument(
        "--sizes",
        type=common.sizes,
        default=[256, 512, 1024, 2048, 4096],
        metavar="LIST",
        help="square image sizes; keep them small on a CPU (default: 256,...,4096)",
    )
    parser.add_argument(
        "--stack",
        type=common.non_negative_int,
        default=64,
        metavar="N",
        help="also a stack of N slices of the smallest size (0: none; default: 64)",
    )
    parser.add_argument(
        "--tile", type=common.positive_int, metavar="N", help="tile size (default: the device's)"
    )
    parser.add_argument(
        "--repeats",
        type=common.positive_int,
        default=3,
        metavar="N",
        help="timed runs (default: 3)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--output", metavar="MD", help="also write the table to this file")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the table (and write it to --output); 1 when nothing could be measured."""
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
        log=common.print_line,
    )
    rows, skipped = run_bench(config)
    report = to_markdown(rows, skipped, config, "allinone " + " ".join(sys.argv[1:]))
    print(report)
    if args.output:
        output = Path(args.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report, encoding="utf-8")
        common.print_line(f"wrote {output}")
    return 0 if rows else 1
