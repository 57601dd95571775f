"""The `allinone` command line.

One module a command registers its subparser and its handler (`register(commands)` sets the
parser's `handler` default); the users' commands come first in `--help`, then the maintainers'
(`allinone.cli.maintainers`). `common` holds what they share. Heavy modules (torch, the Restorer)
are imported inside the handlers, so `allinone --help` answers at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from allinone import __version__
from allinone.cli import analyze, batch, common, export, finetune, maintainers, models, restore

USER_MODULES = (restore, analyze, finetune, batch, models, export)
"""One module a command, in the order `allinone --help` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="allinone",
        description="All-in-one image restoration: noise, blur, haze, rain, low light and "
        "downsampling, from one model.",
        epilog=f"{maintainers.EPILOG} `allinone COMMAND --help` describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in USER_MODULES + maintainers.MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (2 for a user error, 130 if interrupted)."""
    args = build_parser().parse_args(argv)
    return common.run_handler(args.handler, args)
