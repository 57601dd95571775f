"""`allinone train-composition`: retrain a model's composition head, the rest frozen."""

from __future__ import annotations

import argparse

from allinone.cli import common


def register(commands: common.Commands) -> None:
    """Add the `train-composition` parser and its handler."""
    parser = commands.add_parser(
        "train-composition",
        help="retrain a model's composition head, the rest of the network frozen",
        description="Retrain the composition head of --model on the training data (see "
        "allinone.train.composition), on the CPU, and save the model with the new head.",
    )
    parser.add_argument("--model", default="default", metavar="NAME|PATH", help="default: default")
    parser.add_argument("--out", required=True, metavar="PATH", help="the new model's .safetensors")
    parser.add_argument("--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA)")
    parser.add_argument("--steps", type=common.positive_int, default=2000, metavar="N")
    parser.add_argument("--patch-size", type=common.positive_int, default=128, metavar="N")
    parser.add_argument("--seed", type=int, default=0, metavar="N")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing model")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Retrain the head, printing each validation, and save the model."""
    from allinone.infer.restorer import Restorer
    from allinone.train.composition import HeadConfig, retrain_from_data
    from allinone.train.data import data_root

    def report(record) -> None:
        if record.val_loss is not None:
            common.print_line(
                f"step {record.step} loss={record.loss:.4f} val_loss={record.val_loss:.4f} "
                f"val_top1={100 * record.val_top1:.1f}%"
            )

    output = common.model_output(args.out, args.overwrite)
    restorer = Restorer.from_pretrained(args.model, device="cpu")
    config = HeadConfig(steps=args.steps, patch_size=args.patch_size, seed=args.seed)
    retrained = retrain_from_data(restorer, data_root(args.data), config, report)
    common.print_line(f"saved {retrained.save(output)}")
    return 0
