"""`allinone train-exposure`: train the exposure estimator that auto scaling uses."""

from __future__ import annotations

import argparse
from pathlib import Path

from allinone.cli import common


def register(commands: common.Commands) -> None:
    """Add the `train-exposure` parser and its handler."""
    parser = commands.add_parser(
        "train-exposure",
        help="train the exposure estimator that auto scaling uses on 8-bit colour photos",
        description="Train the exposure estimator (allinone.models.exposure) on the training "
        "photos, on the CPU (a few minutes), and save it as safetensors.",
    )
    parser.add_argument("--out", required=True, metavar="PATH", help="the .safetensors to write")
    parser.add_argument("--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA)")
    parser.add_argument("--steps", type=common.positive_int, default=3000, metavar="N")
    parser.add_argument("--seed", type=int, default=0, metavar="N")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train the estimator, printing each record, and save it."""
    from allinone.models.exposure import save_estimator
    from allinone.train.data import data_root
    from allinone.train.exposure import train_from_data

    def report(record) -> None:
        common.print_line(
            f"step {record.step} loss={record.loss:.4f} val_psnr={record.val_psnr:.2f}"
        )

    root = data_root(args.data)
    net, training = train_from_data(root, args.steps, seed=args.seed, on_record=report)
    common.print_line(f"saved {save_estimator(net, Path(args.out), training)}")
    return 0
