"""The report of a run: the goals judged on it, its provenance, and the Markdown
(`benchmarks/RESULTS.md`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from allinone import microscopy_baselines as mb
from allinone.degradations.composition_set import COMPOSITION_CROP, COMPOSITION_SEVERITIES
from allinone.evaluate.baselines import classical_denoiser_name
from allinone.evaluate.composition import THRESHOLD
from allinone.evaluate.results import CompositionResult, Goal, Report, Row, TaskResult
from allinone.evaluate.synthesis import SIGMAS
from allinone.infer.restorer import Restorer
from allinone.types import DEGRADATIONS


def _find(results: list[TaskResult], key: str) -> TaskResult | None:
    return next((r for r in results if r.key == key), None)


def _model_row(task: TaskResult) -> Row:
    """The model's row of a measured task (every measured task has one)."""
    row = task.model_row()
    assert row is not None
    return row


def _denoise_goals(results: list[TaskResult]) -> list[Goal]:
    s25 = _find(results, "denoise-25")
    model25 = s25.model_row() if s25 else None
    first = Goal(
        "CBSD68 σ = 25: PSNR ≥ 31.0 dB",
        None if model25 is None else model25.psnr >= 31.0,
        "not measured" if model25 is None else f"{model25.psnr:.2f} dB",
    )
    gaps = []
    for sigma in SIGMAS:
        task = _find(results, f"denoise-{sigma}")
        cbm3d = next((r for r in task.rows if r.method.startswith("CBM3D")), None) if task else None
        if task and cbm3d:
            gaps.append((sigma, _model_row(task).psnr - cbm3d.psnr))
    measured = len(gaps) == len(SIGMAS)
    second = Goal(
        "every σ: PSNR ≥ CBM3D + 0.3 dB",
        all(gap >= 0.3 for _, gap in gaps) if measured else None,
        "; ".join(f"σ {s}: {g:+.2f} dB" for s, g in gaps)
        if measured
        else "not measured (needs all σ with CBM3D: `pip install .[eval]`, --baselines)",
    )
    return [first, second]


def _baseline_goal(results: list[TaskResult]) -> Goal:
    gaps = []
    for task in results:
        model, best = task.model_row(), task.best_baseline()
        if model and best:
            gaps.append((task.key, model.psnr - best.psnr))
    missed = [f"{key} ({gap:+.2f} dB)" for key, gap in gaps if gap <= 0]
    detail = "missed on " + ", ".join(missed) if missed else f"{len(gaps)} tables"
    return Goal(
        "every task: PSNR above its best baseline",
        (not missed) if gaps else None,
        detail if gaps else "not measured",
    )


def goals(results: list[TaskResult], composition: CompositionResult | None) -> list[Goal]:
    """The issue's targets, judged on what this run measured."""
    fmd = _find(results, "fmd")
    fmd_gain = None if fmd is None else _model_row(fmd).psnr - fmd.rows[0].psnr
    return [
        *_denoise_goals(results),
        _baseline_goal(results),
        Goal(
            "composition: top-1 ≥ 95 % on single degradations",
            None if composition is None else composition.single_top1 >= 0.95,
            "not measured" if composition is None else f"{100 * composition.single_top1:.1f} %",
        ),
        Goal(
            "FMD fields 2–6: PSNR ≥ input + 6 dB on average",
            None if fmd_gain is None else fmd_gain >= 6.0,
            "not measured" if fmd_gain is None else f"{fmd_gain:+.2f} dB",
        ),
        *_microscopy_goals(results),
    ]


def _microscopy_goals(results: list[TaskResult]) -> list[Goal]:
    fmd, held_out = _find(results, "fmd"), _find(results, "fluorescence")
    fmd_psnr = None if fmd is None else _model_row(fmd).psnr
    oracle = held_out.row_of("oracle", mb.bm3d_name()) if held_out else None
    gap = None if held_out is None or oracle is None else _model_row(held_out).psnr - oracle.psnr
    worse = [
        f"{task.key} image {i + 1} ({after - before:+.2f} dB)"
        for task in (fmd, held_out)
        if task and (adapted := task.row_of("adapted"))
        for i, (before, after) in enumerate(
            zip(_model_row(task).per_image, adapted.per_image, strict=True)
        )
        if after < before
    ]
    measured = any(task and task.row_of("adapted") for task in (fmd, held_out))
    return [
        Goal(
            "FMD fields 2–6: PSNR ≥ 39.8 dB",
            None if fmd_psnr is None else fmd_psnr >= 39.8,
            "not measured" if fmd_psnr is None else f"{fmd_psnr:.2f} dB",
        ),
        Goal(
            "held-out procedural specimens: PSNR ≥ BM3D tuned against the truth",
            None if gap is None else gap >= 0,
            "not measured" if gap is None else f"{gap:+.2f} dB",
        ),
        Goal(
            "adaptation never below the default, image by image (microscopy)",
            (not worse) if measured else None,
            ("below on " + ", ".join(worse) if worse else "never below")
            if measured
            else "not measured",
        ),
    ]


def git_commit(directory: Path | None = None) -> str:
    """`git rev-parse --short HEAD` (with `-dirty` when files differ), or "unknown"."""
    cwd = directory or Path(__file__).parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        if done.returncode:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else from `platform`, with the core count."""
    name = ""
    with_cpuinfo = Path("/proc/cpuinfo")
    if with_cpuinfo.exists():
        for line in with_cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    return f"{name}, {os.cpu_count()} logical cores"


def hardware(device: torch.device) -> str:
    """The CPU and, when the model runs on CUDA, the GPU."""
    text = f"CPU: {cpu_name()}"
    if device.type == "cuda":
        text += f"; GPU: {torch.cuda.get_device_name(device)}"
    return text + f"; model on {device}"


def provenance(restorer: Restorer, root: Path, command: str, limit: int | None) -> dict[str, str]:
    """The facts a reader needs to trust and reproduce the numbers."""
    steps = restorer.card.training.get("steps", 0)
    return {
        "command": command,
        "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "hardware": hardware(restorer.device),
        "torch": torch.__version__,
        "model": f"{restorer.card.name} (preset {restorer.card.preset.get('name', '?')})",
        "training steps": str(steps),
        "data": str(root),
        "images per task": "all" if limit is None else f"at most {limit}",
        "classical denoiser": classical_denoiser_name(),
    }


def _number(value: float | None, digits: int) -> str:
    return "–" if value is None or np.isnan(value) else f"{value:.{digits}f}"


def _table(task: TaskResult) -> list[str]:
    with_y = any(row.psnr_y is not None for row in task.rows)
    head = ["method", "PSNR (dB)", "SSIM", "images", "s / image"]
    if with_y:
        head.insert(2, "Y-PSNR (dB)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in task.rows:
        name = f"**{row.method}**" if row.kind in ("model", "adapted") else row.method
        cells = [name, _number(row.psnr, 2), _number(row.ssim, 4), str(row.images)]
        cells.append(_number(row.seconds, 2))
        if with_y:
            cells.insert(2, _number(row.psnr_y, 2))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _references(task: TaskResult) -> list[str]:
    if not task.references:
        return []
    lines = [
        "",
        "Published, not measured here:",
        "",
        "| method | PSNR (dB) | SSIM | note |",
        "|---|---|---|---|",
    ]
    for row in task.references:
        lines.append(f"| {row.method} | {row.psnr:.2f} | {_number(row.ssim, 4)} | {row.note} |")
    return lines


def _composition_section(result: CompositionResult) -> list[str]:
    lines = [
        "## Degradation composition (`Restorer.analyze`)",
        "",
        f"Single degradations: {result.single_count} images (CBSD68 {COMPOSITION_CROP}×"
        f"{COMPOSITION_CROP} centre crops × {len(DEGRADATIONS)} types × severities "
        f"{', '.join(map(str, COMPOSITION_SEVERITIES))}); top-1 accuracy "
        f"**{100 * result.single_top1:.1f} %**.",
        f"Mixtures of 2–3 types (`synthesize(mix_probability=1)`): {result.mixture_count} images; "
        f"mean AUC **{result.mixture_mean_auc:.3f}**, exact-set accuracy at p ≥ {THRESHOLD} "
        f"**{100 * result.mixture_exact:.1f} %**.",
        "",
        "| type | top-1 (single) | AUC (single) | AUC (mixtures) |",
        "|---|---|---|---|",
    ]
    for name in DEGRADATIONS:
        lines.append(
            f"| {name} | {100 * result.single_top1_per_type[name]:.1f} % | "
            f"{_number(result.single_auc[name], 3)} | {_number(result.mixture_auc[name], 3)} |"
        )
    lines += [
        "",
        "Single degradations, true type (rows) against the type read (the most probable; columns):",
        "",
        "| true type | " + " | ".join(DEGRADATIONS) + " |",
        "|---" * (len(DEGRADATIONS) + 1) + "|",
    ]
    for name, counts in result.single_confusion.items():
        lines.append(f"| {name} | " + " | ".join(str(counts[r]) for r in DEGRADATIONS) + " |")
    return lines


def _goal_section(report: Report) -> list[str]:
    status = {True: "met", False: "**missed**", None: "not measured"}
    lines = ["## Goals", "", "| goal | measured | status |", "|---|---|---|"]
    lines += [f"| {g.text} | {g.detail} | {status[g.met]} |" for g in report.goals]
    return lines


def to_markdown(report: Report) -> str:
    """The report as `benchmarks/RESULTS.md`."""
    meta = report.meta
    lines = [
        "# Quality benchmark",
        "",
        f"Generated by `{meta['command']}`; do not edit by hand. Protocols: "
        "`src/allinone/evaluate/__init__.py` (package docstring).",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in meta.items() if key != "command"),
    ]
    if meta.get("training steps") == "0":
        lines += [
            "",
            "> **Untrained model (random weights).** These numbers only show that the protocols "
            "run; they say nothing about the method's quality.",
        ]
    if meta.get("images per task") != "all":
        lines += ["", "> Subsets: at most the first N images of each set; not the full sets."]
    lines += ["", *_goal_section(report)]
    for task in report.tasks:
        lines += ["", f"## {task.title}", "", *_table(task), *_references(task)]
        lines += [f"\n{note}" for note in task.notes]
    if report.composition is not None:
        lines += ["", *_composition_section(report.composition)]
    return "\n".join(lines) + "\n"
