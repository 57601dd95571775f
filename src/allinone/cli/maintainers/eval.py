"""`allinone eval`: restoration quality on the benchmark sets, as a Markdown report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allinone.cli import common
from allinone.infer.options import RestoreOptions


def register(commands: common.Commands) -> None:
    """Add the `eval` parser and its handler."""
    parser = commands.add_parser(
        "eval",
        help="measure restoration quality on the benchmark sets",
        description="Run the quality protocols (see src/allinone/evaluate/__init__.py) on the "
        "model and the classical baselines, and write a Markdown report.",
    )
    parser.add_argument("--model", default="default", metavar="NAME|PATH", help="default: default")
    parser.add_argument(
        "--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA, else ../shared/data)"
    )
    parser.add_argument(
        "--tasks",
        default="all",
        metavar="LIST",
        help="all, or some of denoise,derain,dehaze,hazephotos,sr,deblur,lowlight,fmd,"
        "fluorescence,composition",
    )
    parser.add_argument(
        "--limit",
        type=common.positive_int,
        metavar="N",
        help="at most N images per set (default: all)",
    )
    parser.add_argument("--device", default="auto", metavar="DEVICE", help="default: auto")
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the slow classical baselines (CBM3D, Richardson-Lucy, ...; default: on)",
    )
    parser.add_argument(
        "--output", default="benchmarks/RESULTS.md", metavar="MD", help="the Markdown report"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    common.add_scaling_option(parser)
    common.add_chain_switches(parser)
    common.add_float_output(parser)
    parser.add_argument(
        "--adapt-seconds",
        type=float,
        default=60.0,
        metavar="S",
        help="microscopy tasks: seconds of self-supervised training per image for the adapted "
        "model and the network trained from scratch (0: neither; default: 60)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate the model on the tasks; write the Markdown report, and the JSON if asked."""
    from allinone.evaluate import Context, evaluate, parse_tasks, provenance, to_markdown
    from allinone.infer.restorer import Restorer
    from allinone.train.data import data_root

    tasks = parse_tasks(args.tasks)
    root = data_root(args.data)
    restorer = Restorer.from_pretrained(args.model, device=args.device)
    options = common.restore_options(args)
    context = Context(
        restorer,
        root,
        args.limit,
        args.baselines,
        common.print_line,
        options,
        args.adapt_seconds,
    )
    command = _command_line(args, tasks, options)
    report = evaluate(context, tasks, provenance(restorer, root, command, args.limit))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(to_markdown(report), encoding="utf-8")
    print(f"wrote {output}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(report.to_json(), encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def _command_line(args: argparse.Namespace, tasks: list[str], options: RestoreOptions) -> str:
    """The `allinone eval` command that reproduces this run, for the report's provenance."""
    return " ".join(
        ["allinone eval", f"--model {args.model}", f"--tasks {','.join(tasks)}"]
        + ([f"--limit {args.limit}"] if args.limit else [])
        + ([] if args.baselines else ["--no-baselines"])
        + common.option_flags(options)
        + [f"--adapt-seconds {args.adapt_seconds:g}"]
    )
