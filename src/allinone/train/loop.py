"""The bidirectional optimisation: train a preset on synthesised degradations, resumably.

Each step restores the degraded batch and re-degrades the clean batch through the degradation
network with the same representation; the loss is L1(restored, clean) + w_d * L1(re-degraded,
degraded) + w_c * BCE(composition, labels). w_d ramps linearly from 0 to `degrade_weight` over the
first `degrade_warmup` steps (the representation first learns to help restoring, then to explain
the degradation); w_c is constant. The learning rate warms up linearly, then follows a cosine,
from step `cycle_start` (0, or a warm restart of a continued run).

Launched by `torchrun --nproc_per_node=N -m allinone.cli train ...` (WORLD_SIZE > 1), each process
trains the same network under DistributedDataParallel (gloo on the CPU, nccl on CUDA, one GPU per
local rank) on its own data stream (seeds offset by the rank), with `batch_size` patches each;
only rank 0 validates and writes logs, checkpoints and exports. Checkpoints keep every rank's
random-generator states, so a resumed run continues each stream; a multi-node run needs the run
folder on a filesystem that every node sees.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from allinone.degradations import check_type_weights, to_8_bits
from allinone.devices import cpu_has_bf16
from allinone.errors import InputError
from allinone.microscopy import HELD_OUT_BITS, HELD_OUT_FAMILIES
from allinone.models import AllInOneNet, build_network
from allinone.train.checkpoint import (
    load_checkpoint,
    optimizer_tensors,
    restore_optimizer,
    save_checkpoint,
)
from allinone.train.data import (
    ImageSet,
    PatchSampler,
    data_root,
    degrade_batch,
    load_images,
    load_microscopy,
    load_real_pairs,
    raw_frame_pairs,
    real_pair_paths,
    training_paths,
)
from allinone.train.fluorescence import FluorescencePool
from allinone.train.losses import RESTORE_LOSSES, bidirectional_loss, psnr
from allinone.weights import ModelCard, save_model


@dataclass
class TrainConfig:
    """Everything a training run depends on (saved in checkpoints and model cards)."""

    preset: str = "small"
    steps: int = 20000
    batch_size: int = 16
    patch_size: int = 96
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    degrade_weight: float = 0.5
    degrade_warmup: int = 2000
    composition_weight: float = 0.1
    microscopy_fraction: float = 0.125
    real_pair_fraction: float = 0.0
    raw_frames: int = 0
    """Raw frames of FMD field 19 joining the real pairs, each against its other frames' mean."""
    fluorescence_fraction: float = 0.0
    """Share of each batch drawn from procedural fluorescence specimens under random detectors."""
    fluorescence_pool: int = 600
    """Planes in the procedural pool (drawn once from the seed)."""
    fluorescence_size: int = 256
    """Side of a pool plane, pixels: percentiles are fitted on the whole plane, as restore does."""
    grey_fraction: float = 0.25
    type_weights: dict[str, float] | None = None
    grad_clip: float = 1.0
    validation_images: int = 8
    validate_every: int = 500
    checkpoint_every: int = 250
    seed: int = 0
    amp: bool = True
    cpu_bf16: bool = False
    round_photos: bool = False
    """Round the degraded photos (training and validation) to 8 bits, as real photos are."""
    cycle_start: int = 0
    """The step at which the warm-up and the cosine start (later than 0: a warm restart)."""
    restore_loss: str = "l1"
    """The restoring direction's loss: "l1", "charbonnier" or "psnr" (`train.losses`)."""
    degrade_share: float = 1.0
    """Share of each batch that the degradation network re-degrades (the bidirectional branch)."""
    ema_decay: float = 0.0
    """Above 0: keep an exponential moving average of the weights, which validates and exports."""
    patch_schedule: list[int] | None = None
    """Patch sides in turn over the learning-rate cycle (progressive patches); each step's batch
    is scaled to keep `batch_size` patches of `patch_size` pixels' worth of pixels."""

    def __post_init__(self) -> None:
        try:
            check_type_weights(self.type_weights)
        except ValueError as error:
            raise InputError(f"type_weights: {error}") from None
        if self.restore_loss not in RESTORE_LOSSES:
            choices = ", ".join(RESTORE_LOSSES)
            raise InputError(f"restore_loss {self.restore_loss!r}: choose from {choices}")
        if not 0.0 <= self.degrade_share <= 1.0:
            raise InputError(f"degrade_share {self.degrade_share}: must lie in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise InputError(f"ema_decay {self.ema_decay}: must lie in [0, 1)")
        if self.patch_schedule is not None and (
            not self.patch_schedule or min(self.patch_schedule) < 16
        ):
            raise InputError("patch_schedule: a list of patch sides of at least 16 pixels")

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> TrainConfig:
        """Read a JSON config; keyword arguments that are not None override it."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read training config {path}: {error}") from error
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{path}: unknown config keys {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def learning_rate(self, step: int) -> float:
        step, steps = step - self.cycle_start, self.steps - self.cycle_start
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, steps - self.warmup_steps))
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * progress))

    def degrade_weight_at(self, step: int) -> float:
        return self.degrade_weight * min(1.0, step / max(1, self.degrade_warmup))

    def patch_at(self, step: int) -> int:
        """The patch side at `step`: `patch_schedule`'s entries in equal parts of the cycle."""
        if not self.patch_schedule:
            return self.patch_size
        progress = (step - self.cycle_start) / max(1, self.steps - self.cycle_start)
        index = int(min(max(progress, 0.0), 0.999) * len(self.patch_schedule))
        return self.patch_schedule[index]

    def batch_at(self, step: int) -> int:
        """Patches in the batch at `step`: as many pixels as `batch_size` of `patch_size`."""
        scale = (self.patch_size / self.patch_at(step)) ** 2
        return max(1, round(self.batch_size * scale))


@dataclass(frozen=True)
class Distributed:
    """This process's place in a `torchrun` job: rank 0 of 1 when not launched by torchrun."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join torchrun's process group when WORLD_SIZE > 1; return the job and this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), device
    job = Distributed(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", job.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return job, device


class Objective(nn.Module):
    """The network and its loss as one module, so DistributedDataParallel sees every use."""

    def __init__(self, net: AllInOneNet, restore_kind: str = "l1", degrade_share: float = 1.0):
        super().__init__()
        self.net = net
        self.restore_kind = restore_kind
        self.degrade_share = degrade_share

    def forward(
        self,
        degraded: torch.Tensor,
        clean: torch.Tensor,
        labels: torch.Tensor | None,
        degrade_weight: float,
        composition_weight: float,
    ) -> dict[str, torch.Tensor]:
        output = self.net(degraded)
        return bidirectional_loss(
            self.net,
            output,
            clean,
            degraded,
            labels,
            degrade_weight,
            composition_weight,
            self.restore_kind,
            self.degrade_share,
        )


class Trainer:
    """Owns the network, optimiser, samplers and generators of one run in `out_dir`."""

    def __init__(
        self,
        config: TrainConfig,
        out_dir: Path,
        data: str | Path | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.dist, self.device = init_distributed(torch.device(device))
        stream_seed = config.seed + 2 * self.dist.rank
        torch.manual_seed(config.seed)
        # torch's stubs omit Module.to's memory_format keyword
        self.net: AllInOneNet = build_network(config.preset).to(  # type: ignore[call-overload]
            self.device, memory_format=torch.channels_last
        )
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        root = data_root(data)
        photos, micro, validation = training_paths(root, config.validation_images)
        pairs = real_pair_paths(root) if config.real_pair_fraction > 0 else []
        self.sources = {"photos": len(photos), "microscopy": len(micro), "root": str(root)}
        if pairs:
            self.sources["real_pairs"] = len(pairs)
        real = load_real_pairs(pairs) + (raw_frame_pairs(root, config.raw_frames) if pairs else [])
        if len(real) > len(pairs):
            self.sources["raw_frames"] = len(real) - len(pairs)
        images = ImageSet(load_images(photos), load_microscopy(micro), real)
        self.sampler = PatchSampler(
            images, config.patch_size, config.microscopy_fraction, stream_seed
        )
        self.real_per_batch = round(config.batch_size * config.real_pair_fraction) if pairs else 0
        self.synth = torch.Generator(device=self.device).manual_seed(stream_seed + 1)
        self.fluorescence_per_batch = round(config.batch_size * config.fluorescence_fraction)
        self.fluorescence: FluorescencePool | None = None
        if self.fluorescence_per_batch:
            self.fluorescence = FluorescencePool(
                config.fluorescence_pool, config.fluorescence_size, seed=config.seed + 3
            )
            self.sources["fluorescence_planes"] = config.fluorescence_pool
        self.fluorescence_stream = torch.Generator().manual_seed(stream_seed + 5)
        self.validation = self._validation_set(load_images(validation))
        self.held_out = held_out_fluorescence(config.patch_size)
        self.step = 0
        self.ema: AveragedModel | None = None
        if config.ema_decay > 0:
            self.ema = AveragedModel(
                self.net, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
            )
        self.resume()
        self.objective: nn.Module = Objective(self.net, config.restore_loss, config.degrade_share)
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.objective = DistributedDataParallel(
                self.objective, device_ids=ids, find_unused_parameters=True
            )

    @property
    def is_main(self) -> bool:
        """True on the process that validates and writes (rank 0)."""
        return self.dist.is_main

    def _validation_set(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        sampler = PatchSampler(ImageSet(images, []), self.config.patch_size, 0.0, seed=12345)
        clean, _ = sampler.sample(4 * len(images))
        generator = torch.Generator(device=self.device).manual_seed(54321)
        clean = clean.to(self.device)
        degraded = synthesize_validation(clean, generator)
        return clean, to_8_bits(degraded) if self.config.round_photos else degraded

    def _amp(self):
        """bf16 autocast on CUDA (`amp`) and on CPUs with native bf16 (`cpu_bf16`)."""
        if self.device.type == "cuda":
            enabled = self.config.amp
        else:
            enabled = self.config.cpu_bf16 and self.device.type == "cpu" and cpu_has_bf16()
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns the loss terms."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate(self.step)
        batch_size, real, synthetic = self._batch_plan()
        patch = self.sampler.patch = config.patch_at(self.step)
        photos, micro = self.sampler.sample(batch_size - real - synthetic)
        photos = photos.to(self.device)
        micro = micro.to(self.device) if micro is not None else None
        pairs = None
        if real:
            noisy, truth = self.sampler.sample_pairs(real)
            pairs = noisy.to(self.device), truth.to(self.device)
        fluorescence = None
        if synthetic:
            assert self.fluorescence is not None  # made whenever fluorescence_per_batch > 0
            drawn = self.fluorescence.sample(synthetic, patch, self.fluorescence_stream)
            noisy, truth, severity = (t.to(self.device) for t in drawn)
            fluorescence = noisy, truth, severity
        clean, batch = degrade_batch(
            photos,
            micro,
            self.synth,
            config.grey_fraction,
            pairs,
            config.type_weights,
            config.round_photos,
            fluorescence,
        )
        self.net.train()
        with self._amp():
            terms = self.objective(
                batch.degraded.contiguous(memory_format=torch.channels_last),
                clean.contiguous(memory_format=torch.channels_last),
                batch.labels,
                config.degrade_weight_at(self.step),
                config.composition_weight,
            )
        self.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), config.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        self.step += 1
        return self._mean_over_ranks(terms)

    def _batch_plan(self) -> tuple[int, int, int]:
        """(patches, of them real pairs, of them procedural fluorescence) for this step."""
        config = self.config
        batch_size = config.batch_at(self.step)
        real = round(batch_size * config.real_pair_fraction) if self.real_per_batch else 0
        synthetic = round(batch_size * config.fluorescence_fraction) if self.fluorescence else 0
        return batch_size, real, synthetic

    @property
    def model(self) -> AllInOneNet:
        """The network that validates and exports: the weights' moving average when kept."""
        return self.net if self.ema is None else cast(AllInOneNet, self.ema.module)

    def _mean_over_ranks(self, terms: dict[str, torch.Tensor]) -> dict[str, float]:
        values = torch.stack([v.detach().float() for v in terms.values()])
        if self.dist.world_size > 1:
            dist.all_reduce(values)
            values /= self.dist.world_size
        return dict(zip(terms, values.tolist(), strict=True))

    def _max_over_ranks(self, value: float) -> float:
        if self.dist.world_size == 1:
            return value
        tensor = torch.tensor([value], device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return float(tensor.item())

    def _any_rank(self, flag: bool) -> bool:
        return self._max_over_ranks(float(flag)) > 0

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean PSNR of restored and degraded validation patches, and composition accuracy."""
        clean, degraded = self.validation
        net = self.model.eval()
        results, inputs = [], []
        for start in range(0, clean.shape[0], 8):
            c, d = clean[start : start + 8], degraded[start : start + 8]
            with self._amp():
                results.append(psnr(net(d).restored.float(), c))
            inputs.append(psnr(d, c))
        noisy, clean, _ = (t.to(self.device) for t in self.held_out)
        with self._amp():
            held_out = psnr(net(noisy).restored.float(), clean)
        return {
            "val_psnr": float(torch.cat(results).mean()),
            "val_input_psnr": float(torch.cat(inputs).mean()),
            "val_fluorescence_psnr": float(held_out.mean()),
            "val_fluorescence_input_psnr": float(psnr(noisy, clean).mean()),
        }

    def _stream_states(self) -> dict[str, torch.Tensor]:
        """Every rank's data-stream generator states (a collective call when distributed)."""
        own = {
            "rng.sampler": self.sampler.state(),
            "rng.synth": self.synth.get_state(),
            "rng.fluorescence": self.fluorescence_stream.get_state(),
        }
        if self.dist.world_size == 1:
            return own
        ranks: list = [None] * self.dist.world_size
        dist.all_gather_object(ranks, own)
        states = dict(ranks[0])
        for rank in range(1, self.dist.world_size):
            states.update({f"{k}.rank{rank}": v for k, v in ranks[rank].items()})
        return states

    def checkpoint(self) -> None:
        """Save the run (called on every rank; rank 0 writes)."""
        streams = self._stream_states()
        if not self.is_main:
            return
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update(optimizer_tensors(self.optimizer))
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        tensors["rng.torch"] = torch.get_rng_state()
        tensors.update(streams)
        state = {"step": self.step, "config": asdict(self.config)}
        save_checkpoint(self.out_dir / "checkpoint", tensors, state)

    def resume(self) -> None:
        """Continue from the checkpoint in `out_dir`, if any (exactly: model, optimiser, RNG)."""
        loaded = load_checkpoint(self.out_dir / "checkpoint")
        if loaded is None:
            return
        tensors, state = loaded
        if state["config"]["preset"] != self.config.preset:
            raise InputError(f"{self.out_dir} holds a {state['config']['preset']} run")
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        self.net.load_state_dict(model)
        if self.ema is not None:
            average = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
            if average:
                self.ema.load_state_dict(average)
            else:  # a run that kept no average: it starts from the weights resumed
                self.ema.module.load_state_dict(model)
        restore_optimizer(self.optimizer, tensors)
        torch.set_rng_state(tensors["rng.torch"])
        suffix = f".rank{self.dist.rank}" if self.dist.rank else ""
        if f"rng.sampler{suffix}" in tensors:  # else a rank the saved run did not have
            self.sampler.set_state(tensors[f"rng.sampler{suffix}"])
            self.synth.set_state(tensors[f"rng.synth{suffix}"])
        if f"rng.fluorescence{suffix}" in tensors:  # else a run from before the procedural pool
            self.fluorescence_stream.set_state(tensors[f"rng.fluorescence{suffix}"])
        self.step = int(state["step"])
        self._truncate_log()

    def _truncate_log(self) -> None:
        """Drop log records past the checkpoint, which a resumed run is about to redo."""
        path = self.out_dir / "log.jsonl"
        if not self.is_main or not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line and json.loads(line)["step"] <= self.step]
        path.write_text("".join(line + "\n" for line in kept))

    def log(self, record: dict) -> None:
        """Append `record` to the run's log (rank 0 only)."""
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def run(
        self,
        until: int | None = None,
        seconds: float | None = None,
        report: Callable[[dict], None] | None = None,
    ) -> None:
        """Train to step `until` (default: the config's steps) or for `seconds`, checkpointing.

        `report(record)` is called after each step on rank 0.
        """
        until = self.config.steps if until is None else min(until, self.config.steps)
        start = time.monotonic()
        while self.step < until:
            terms = self.train_step()
            record = {"step": self.step, "lr": self.config.learning_rate(self.step - 1), **terms}
            due = self.step % self.config.validate_every == 0 or self.step == until
            if due and self.is_main:
                record.update(self.validate())
            self.log(record)
            if report is not None and self.is_main:
                report(record)
            out_of_time = seconds is not None and self._any_rank(time.monotonic() - start > seconds)
            if self.step % self.config.checkpoint_every == 0 or self.step == until or out_of_time:
                self.checkpoint()
            if out_of_time:
                break

    def fit_steps(
        self,
        seconds: float,
        probe: int = 50,
        report: Callable[[dict], None] | None = None,
    ) -> float:
        """Start a learning-rate cycle (warm-up, cosine) at the current step, train `probe` steps,
        then set the config's `steps` so that the cycle ends when `seconds` (counted from this
        call) run out at the pace measured, with a tenth to spare for validations and the export;
        return the seconds left.

        The warm-up does not depend on `steps`, so when it covers the probe the cycle follows
        exactly the schedule of a config that had said so from the start. On a resumed run the
        cycle is a warm restart, even when the config's `steps` were reached already.
        """
        start, first = time.monotonic(), self.step
        steps = max(self.config.steps, self.step + probe)
        self.config = replace(self.config, cycle_start=self.step, steps=steps)
        self.run(until=self.step + probe, seconds=seconds, report=report)
        elapsed = time.monotonic() - start
        pace = self._max_over_ranks(elapsed / max(1, self.step - first))
        left = seconds - self._max_over_ranks(elapsed)
        self.config = replace(self.config, steps=self.step + max(0, int(0.9 * left / pace)))
        return left

    def wait_for_all(self) -> None:
        """Wait until every process of the run gets here (nothing without a process group), so
        that none leaves the group while another still talks to it (a rank that did so
        sometimes aborted at exit, "terminate called without an active exception")."""
        if self.dist.world_size > 1 and dist.is_initialized():
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, if this run joined one."""
        if self.dist.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()

    def export(self, path: Path, name: str, description: str = "") -> Path:
        """Save the current network as a model (weights + card) at `path`."""
        card = ModelCard(
            name=name,
            preset=self.net.preset.to_dict(),
            description=description,
            training={
                "steps": self.step,
                "config": asdict(self.config),
                "sources": self.sources,
                "objective": __doc__.strip().split("\n\n")[1],
                "validation": self.validate(),
            },
        )
        return save_model(self.model.state_dict(), card, path)


def held_out_fluorescence(patch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eight fixed procedural microscopy patches of the held-out families and detector depths
    (`allinone.microscopy`): specimens and cameras the run never trains on."""
    pool = FluorescencePool(8, max(patch, 64), 2024, HELD_OUT_FAMILIES, HELD_OUT_BITS)
    return pool.sample(8, patch, torch.Generator().manual_seed(2025))


def synthesize_validation(clean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A fixed degraded validation set: single and mixed degradations, seeded."""
    from allinone.degradations import synthesize

    return synthesize(clean, generator, clean_probability=0.0).degraded
