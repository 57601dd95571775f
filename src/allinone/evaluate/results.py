"""What a run measured: the rows of each table, the composition scores, the goals, the report."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Row:
    """One method's mean scores on one task."""

    method: str
    psnr: float
    ssim: float | None
    images: int
    kind: str = "baseline"
    """"model", "adapted" (the model adapted to each image), "baseline", "oracle" (a baseline
    tuned against the truth) or "published" (a paper's number, not measured here)."""
    psnr_y: float | None = None
    """Y-channel PSNR with a border shaved (super-resolution only)."""
    seconds: float | None = None
    """Mean seconds per image."""
    note: str = ""
    per_image: list[float] = field(default_factory=list)
    """PSNR of each image, in the task's order."""


@dataclass
class TaskResult:
    """The rows of one table: the model, the baselines and the published references."""

    key: str
    title: str
    rows: list[Row]
    references: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def model_row(self) -> Row | None:
        return self.row_of("model")

    def row_of(self, kind: str, label: str = "") -> Row | None:
        """The first row of `kind` whose method contains `label`."""
        return next((r for r in self.rows if r.kind == kind and label in r.method), None)

    def best_baseline(self) -> Row | None:
        baselines = [row for row in self.rows if row.kind == "baseline"]
        return max(baselines, key=lambda row: row.psnr, default=None)


@dataclass
class CompositionResult:
    """How well `Restorer.analyze` names the degradations of synthetic images."""

    single_count: int
    single_top1: float
    single_top1_per_type: dict[str, float]
    single_auc: dict[str, float]
    single_confusion: dict[str, dict[str, int]]
    mixture_count: int
    mixture_auc: dict[str, float]
    mixture_exact: float

    @property
    def mixture_mean_auc(self) -> float:
        return float(np.nanmean(list(self.mixture_auc.values())))


@dataclass
class Goal:
    """A target from the issue, with whether this run met it (None: not measured)."""

    text: str
    met: bool | None
    detail: str


@dataclass
class Report:
    """Everything one `allinone eval` run measured, and how to reproduce it."""

    meta: dict[str, str]
    tasks: list[TaskResult]
    composition: CompositionResult | None
    goals: list[Goal]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, allow_nan=True)
