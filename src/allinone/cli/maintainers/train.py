"""`allinone train`: train, or go on training, a model on synthesised degradations."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path

from allinone.cli import common
from allinone.errors import InputError


def register(commands: common.Commands) -> None:
    """Add the `train` parser and its handler."""
    parser = commands.add_parser(
        "train",
        help="train (or continue training) a model on synthesised degradations",
        description="Train a preset with NDR's bidirectional optimisation. A run resumes "
        "exactly from the checkpoint in OUT when there is one. Launched by torchrun "
        "(torchrun --nproc_per_node=N -m allinone.cli train ...), each process trains a "
        "DistributedDataParallel replica on its own data stream.",
    )
    parser.add_argument("--config", required=True, metavar="JSON", help="e.g. configs/small.json")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder (checkpoints, log)")
    parser.add_argument("--data", metavar="DIR", help="data folder (default: $ALLINONE_DATA)")
    parser.add_argument("--device", default="auto", metavar="DEVICE", help="default: auto")
    parser.add_argument(
        "--steps", type=common.positive_int, metavar="N", help="override the config"
    )
    parser.add_argument("--seconds", type=float, metavar="S", help="stop (resumably) after S s")
    parser.add_argument(
        "--fit-steps",
        action="store_true",
        help="with --seconds: time the first 50 steps, then set the config's steps so that the "
        "learning rate finishes its schedule as the S seconds run out",
    )
    parser.add_argument("--export", metavar="PATH", help="save the model here when done")
    parser.add_argument("--description", default="", help="the exported model card's description")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train to the last step or the time budget, then export the model if asked to."""
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
            common.print_line(f"training {config.preset} from step {trainer.step} to {last}{ranks}")
        pace = _TrainingPace(trainer.step, config.steps, args.seconds)
        seconds = args.seconds
        if args.fit_steps:
            seconds = trainer.fit_steps(args.seconds, report=pace.report)
            pace.until = trainer.config.steps
            if trainer.is_main:
                common.print_line(f"steps set to {pace.until} to finish within {args.seconds:g} s")
        trainer.run(seconds=seconds, report=pace.report)
        if args.export and trainer.is_main:
            name = Path(args.export).stem
            path = trainer.export(Path(args.export), name=name, description=args.description)
            common.print_line(f"exported {path}")
        trainer.wait_for_all()
    finally:
        trainer.close()
    return 0


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
        return f"{common.record_text(record)} ({per_step:.3g} s/step, {clock} left)"

    def report(self, record: dict) -> None:
        """`Trainer.run`'s report callback."""
        if "val_psnr" in record or record["step"] % 50 == 0:
            common.print_line(self.line(record, time.monotonic() - self.start))
