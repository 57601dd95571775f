"""Equal-budget study of the training recipe: arms from one checkpoint, the same CPU seconds each.

Every arm copies the run in `--checkpoint` (the shipped default's, step 55,519), starts a warm
restart of its learning rate there with the settings of `--config` plus the arm's own, and trains
for `--seconds` of CPU time of its own process (one torch thread by default, so arms that run side
by side, `--jobs`, each get one core and the budget stays fair when the machine is shared). After
each step the cycle's length is set from the pace so far, so that its cosine follows the CPU
seconds spent and ends with the budget. At `--points` equally spaced budgets the arm validates
(the training run's own sets: synthetic photo patches of every degradation type, and the held-out
procedural fluorescence families; validation time is not counted), which gives its curve against
seconds. The `shipped` arm also reports the average of its last three validated weights
(checkpoint averaging). Each arm's final weights land in OUT/ARM/model.safetensors for
`allinone eval --model`.

    python benchmarks/training_study.py [--seconds 720] [--jobs 2] [--arms shipped,ema,...]
        [--out runs/training-study] [--data DIR]

Prints one Markdown table (validation PSNR at the start, at the end and at its best, steps done)
and writes OUT/summary.json and OUT/ARM/curve.jsonl.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import torch

from allinone.train.loop import TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[1]
ARMS: dict[str, dict] = {
    "shipped": {},
    "ema": {"ema_decay": 0.995},
    "lr-1e-3": {"lr": 1e-3},
    "charbonnier": {"restore_loss": "charbonnier"},
    "psnr-loss": {"restore_loss": "psnr"},
    "progressive": {"patch_schedule": [64, 96, 128]},
    "degrade-quarter": {"degrade_share": 0.25},
    "even-types": {"type_weights": None},
}
COMMON = {"warmup_steps": 25, "validate_every": 10**9, "checkpoint_every": 10**9}
AVERAGED = 3


def _validated(trainer: Trainer, seconds: float, start: int) -> dict:
    return {"seconds": round(seconds, 1), "step": trainer.step - start, **trainer.validate()}


def _average(snapshots: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of floating-point tensors (others from the last snapshot)."""
    averaged = dict(snapshots[-1])
    for key, value in averaged.items():
        if value.is_floating_point():
            averaged[key] = torch.stack([s[key] for s in snapshots]).mean(0)
    return averaged


def run_arm(name: str, args: argparse.Namespace) -> dict:
    """Train one arm for its budget; return its curve and final figures."""
    torch.set_num_threads(args.threads)
    folder = args.out / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(args.checkpoint / "checkpoint", folder / "checkpoint")
    config = replace(TrainConfig.from_file(args.config), **COMMON, **ARMS[name])
    trainer = Trainer(config, folder, data=args.data)
    start = trainer.step
    trainer.config = replace(trainer.config, cycle_start=start, steps=start + 10**9)
    curve = [_validated(trainer, 0.0, start)]
    marks = [args.seconds * (k + 1) / args.points for k in range(args.points)]
    snapshots: list[dict[str, torch.Tensor]] = []
    used = 0.0
    while marks:
        before = time.process_time()
        trainer.train_step()
        used += time.process_time() - before
        # the cycle's length at the pace so far: the cosine follows the seconds spent
        done = trainer.step - start
        trainer.config = replace(
            trainer.config, steps=start + max(done, round(done * args.seconds / used))
        )
        if used >= marks[0]:
            marks.pop(0)
            curve.append(_validated(trainer, used, start))
            snapshots = [*snapshots, {k: v.clone() for k, v in trainer.net.state_dict().items()}]
            snapshots = snapshots[-AVERAGED:]
    with open(folder / "curve.jsonl", "w") as handle:
        handle.writelines(json.dumps(point) + "\n" for point in curve)
    result = {"arm": name, "overrides": ARMS[name], "curve": curve}
    trainer.export(folder / "model", name=f"study-{name}", description=f"training study: {name}")
    if name == "shipped":
        trainer.net.load_state_dict(_average(snapshots))
        result["averaged"] = _validated(trainer, used, start)
        trainer.export(folder / "averaged", name="study-averaged", description="last 3 averaged")
    return result


def _row(name: str, curve: list[dict], last: dict) -> str:
    first = curve[0]
    best = max(point["val_psnr"] for point in curve)
    return (
        f"| {name} | {last['step']} | {first['val_psnr']:.3f} | {last['val_psnr']:.3f} | "
        f"{last['val_psnr'] - first['val_psnr']:+.3f} | {best:.3f} | "
        f"{first['val_fluorescence_psnr']:.3f} | {last['val_fluorescence_psnr']:.3f} | "
        f"{last['val_fluorescence_psnr'] - first['val_fluorescence_psnr']:+.3f} |"
    )


def table(results: list[dict], seconds: float) -> str:
    """Markdown: each arm's validation at the start and the end of its budget."""
    lines = [
        f"Budget {seconds:.0f} CPU seconds an arm; validation PSNR in dB.",
        "",
        "| arm | steps | photos start | photos end | change | photos best | "
        "fluorescence start | fluorescence end | change |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(_row(result["arm"], result["curve"], result["curve"][-1]))
        if "averaged" in result:
            lines.append(_row("shipped, last 3 averaged", result["curve"], result["averaged"]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=720.0)
    parser.add_argument("--points", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--config", type=Path, default=REPO / "configs/small-fluorescence.json")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints/small")
    parser.add_argument("--out", type=Path, default=REPO / "runs/training-study")
    parser.add_argument("--data", default=None)
    args = parser.parse_args()
    names = args.arms.split(",")
    unknown = sorted(set(names) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {', '.join(unknown)} (choose from {', '.join(ARMS)})")
    args.out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(run_arm, names, [args] * len(names)))
    (args.out / "summary.json").write_text(json.dumps(results, indent=1))
    print(table(results, args.seconds))


if __name__ == "__main__":
    main()
