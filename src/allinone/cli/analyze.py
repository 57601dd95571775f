"""`allinone analyze`: the probability of each degradation in an image."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from allinone.cli import common
from allinone.types import DEGRADATIONS

if TYPE_CHECKING:
    from allinone.infer.restorer import Composition

DOMINANT_THRESHOLD = 0.5
"""A degradation is reported as dominant when its probability reaches this value."""


def register(commands: common.Commands) -> None:
    """Add the `analyze` parser and its handler."""
    parser = commands.add_parser(
        "analyze",
        help="estimate which degradations an image contains",
        description="Print the probability of each degradation type in INPUT.",
    )
    parser.add_argument("input", metavar="INPUT", help="the image to analyse")
    common.add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--flips",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="average over the image and its three flips (default; --no-flips: 4x faster)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the composition of INPUT as a table, or as one JSON object."""
    from allinone.io import read_image

    image = read_image(args.input)
    restorer = common.load_restorer(args)
    with common.progress("analysing") as progress:
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


def _composition_table(
    source: str, model: str, composition: Composition, dominant: str | None
) -> str:
    """The report as text: a bar for each degradation, then noise level, exposure, dominant."""
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
