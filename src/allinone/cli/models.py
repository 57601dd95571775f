"""`allinone models`: list the available models."""

from __future__ import annotations

import argparse

from allinone.cli import common


def register(commands: common.Commands) -> None:
    """Add the `models` parser and its handler."""
    parser = commands.add_parser(
        "models", help="list the available models", description="List the available models."
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one line a model: name, source, description and file."""
    from allinone.weights import list_models

    entries = list_models()
    width = max((len(entry.name) for entry in entries), default=0)
    for entry in entries:
        where = f"  [{entry.path}]" if entry.path else ""
        print(f"{entry.name:<{width}}  {entry.source:<7}  {entry.description}{where}")
    return 0
