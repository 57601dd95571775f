"""`allinone export`: write a model as a bioimage.io package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from allinone.cli import common
from allinone.errors import InputError


def register(commands: common.Commands) -> None:
    """Add the `export` parser and its handler."""
    parser = commands.add_parser(
        "export",
        help="write a model as a bioimage.io package, for deepImageJ, ilastik and others",
        description="Write --model as a bioimage.io model package (spec 0.5: PyTorch state dict "
        "and TorchScript weights, test tensors, citations, documentation). The package runs the "
        "network on one grey tile scaled to [0, 1]; tiling, intensity scaling, tone keeping and "
        "composition are this plugin's own. Needs the bioimageio extra "
        "(pip install 'napari-allinone[bioimageio]').",
    )
    parser.add_argument("--format", choices=("bioimageio",), default="bioimageio")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.zip")
    parser.add_argument("--model", default="default", metavar="NAME|PATH", help="default: default")
    parser.add_argument(
        "--tile",
        type=common.positive_int,
        default=256,
        metavar="N",
        help="tile size (default: 256)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the package, once the bioimageio extra is known to be installed."""
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
