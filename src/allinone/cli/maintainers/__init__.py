"""The maintainers' commands: they train the shipped weights and reproduce benchmarks/."""

from __future__ import annotations

from allinone.cli.maintainers import bench, eval, train, train_composition, train_exposure

MODULES = (train, train_exposure, train_composition, eval, bench)
"""One module a command, in the order `allinone --help` lists them."""

EPILOG = (
    "train, train-exposure, train-composition, eval and bench are for maintainers: "
    "they train the shipped weights and reproduce benchmarks/ (docs/TRAINING.md)."
)
"""What `allinone --help` says of these commands, after listing them."""
