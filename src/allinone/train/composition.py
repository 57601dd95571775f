"""Retraining the composition head of a trained network, everything else frozen.

In the bidirectional training the head learns with a small weight (`composition_weight`), on
small patches whose types follow the training's type weights (low light drawn a quarter as often
as blur): it ranks the types well yet names the wrong one too often (a blurred or downsampled
photo read as the other, a dark noisy one as noise). This retrains the head alone on larger crops
with every type drawn alike. The encoder and the query modules are frozen, so the degradation
representation and the restorations stay those of the given model except where inference reads
the composition (the exposure and scene-haze gates of `allinone.infer`).

Each step cuts `batch_size` crops as the training sampler does (colour and grey photos,
microscopy fields, a real FMD pair), degrades them with `degrade_batch` (single and mixed types,
equal weights) and rounds them to 8 bits, as the images the head will read are quantised: on
unrounded images it learned to tell downsampling from blur by traces that rounding erases (the
first retrained head named 24 of 24 downsampled validation crops right unrounded, 14 rounded).
The loss is the BCE of the image-level logits. Validation uses a fixed set made from the
held-out DIV2K crops (every type alone at three severities, and mixtures, rounded alike),
encoded once: its BCE picks the head that is kept, and its top-1 accuracy on the single
degradations is recorded. Deterministic given the seed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from allinone.degradations import apply, synthesize, to_8_bits
from allinone.degradations.composition_set import (
    COMPOSITION_CROP,
    COMPOSITION_SEVERITIES,
    MIXTURES_PER_IMAGE,
    crop_centre,
)
from allinone.infer.restorer import Restorer
from allinone.models import AllInOneNet
from allinone.train.data import (
    ImageSet,
    PatchSampler,
    degrade_batch,
    load_images,
    load_microscopy,
    load_real_pairs,
    real_pair_paths,
    training_paths,
)
from allinone.types import DEGRADATIONS

VALIDATION_IMAGES = 8


@dataclass(frozen=True)
class HeadConfig:
    """How the head is retrained (recorded in the model card)."""

    steps: int = 2000
    batch_size: int = 16
    patch_size: int = 128
    lr: float = 1e-3
    microscopy_fraction: float = 0.25
    grey_fraction: float = 0.25
    real_pairs: int = 1
    validate_every: int = 100
    seed: int = 0


@dataclass
class HeadRecord:
    """One line of the head's training log."""

    step: int
    loss: float
    val_loss: float | None = None
    val_top1: float | None = None


@dataclass
class Encoded:
    """A validation set as the head sees it: pooled query weights, latent features, labels."""

    weights: list[torch.Tensor]
    latent: torch.Tensor
    labels: torch.Tensor
    single: torch.Tensor
    """True for the samples that hold one degradation type."""


def head_inputs(net: AllInOneNet, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The frozen encoder's inputs to the head: query weights pooled to the latent size, latent."""
    with torch.no_grad():
        skips, latent = net.encode(x)
        size = cast(tuple[int, int], latent.shape[-2:])
        pairs = zip(net.queries, skips, strict=True)
        weights = [F.adaptive_avg_pool2d(query(skip), size) for query, skip in pairs]
    return weights, latent


def image_logits(net: AllInOneNet, weights: list[torch.Tensor], latent: torch.Tensor):
    """(B, T) image-level logits: the mean of the head's per-pixel ones."""
    return net.composition(weights, latent).mean(dim=(2, 3))


def validation_set(net: AllInOneNet, crops: torch.Tensor, seed: int = 1) -> Encoded:
    """Every crop (B, 3, H, W) under each type alone at the benchmark's severities, and under
    as many mixtures as the benchmark makes of a photo (`allinone.degradations.composition_set`),
    encoded by `net`."""
    generator = torch.Generator().manual_seed(seed)
    degraded, labels = [], []
    for x in crops.split(1):
        for column, name in enumerate(DEGRADATIONS):
            for severity in COMPOSITION_SEVERITIES:
                degraded.append(apply(x, name, severity, generator))
                labels.append(F.one_hot(torch.tensor([column]), len(DEGRADATIONS)).float())
        mixed = synthesize(
            x.repeat(MIXTURES_PER_IMAGE, 1, 1, 1),
            generator,
            mix_probability=1.0,
            clean_probability=0.0,
        )
        degraded.append(mixed.degraded)
        labels.append(mixed.labels)
    weights, latents = zip(*(head_inputs(net, to_8_bits(d)) for d in degraded), strict=True)
    label_rows = torch.cat(labels)
    return Encoded(
        [torch.cat(level) for level in zip(*weights, strict=True)],
        torch.cat(latents),
        label_rows,
        label_rows.sum(dim=1) == 1,
    )


def validate(net: AllInOneNet, encoded: Encoded) -> tuple[float, float]:
    """(BCE, top-1 accuracy on the single degradations) of `net`'s head on `encoded`."""
    with torch.no_grad():
        logits = image_logits(net, encoded.weights, encoded.latent)
    loss = F.binary_cross_entropy_with_logits(logits, encoded.labels).item()
    single = encoded.single
    hits = logits[single].argmax(dim=1) == encoded.labels[single].argmax(dim=1)
    return loss, hits.float().mean().item()


def train_head(
    net: AllInOneNet,
    images: ImageSet,
    encoded: Encoded,
    config: HeadConfig,
    on_record: Callable[[HeadRecord], None] | None = None,
) -> dict:
    """Retrain `net.composition` in place (AdamW, cosine schedule) with the rest of `net`
    frozen; keep the head of the lowest validation BCE. Return the record for the card."""
    torch.manual_seed(config.seed)
    sampler = PatchSampler(images, config.patch_size, config.microscopy_fraction, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    net.eval().requires_grad_(False)
    head = net.composition.requires_grad_(True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(config.steps, 1))
    before = validate(net, encoded)
    best = (before[0], copy.deepcopy(head.state_dict()), before[1])
    for step in range(1, config.steps + 1):
        photos, microscopy = sampler.sample(config.batch_size)
        pairs = sampler.sample_pairs(config.real_pairs) if images.pairs else None
        _, batch = degrade_batch(photos, microscopy, generator, config.grey_fraction, pairs)
        loss = F.binary_cross_entropy_with_logits(
            image_logits(net, *head_inputs(net, to_8_bits(batch.degraded))), batch.labels
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        record = HeadRecord(step, loss.item())
        if step % config.validate_every == 0 or step == config.steps:
            record.val_loss, record.val_top1 = validate(net, encoded)
            if record.val_loss < best[0]:
                best = (record.val_loss, copy.deepcopy(head.state_dict()), record.val_top1)
        if on_record is not None:
            on_record(record)
    head.load_state_dict(best[1])
    net.requires_grad_(False)
    return {
        **asdict(config),
        "val_loss_before": round(before[0], 4),
        "val_top1_before": round(before[1], 4),
        "val_loss": round(best[0], 4),
        "val_top1": round(best[2], 4),
    }


def retrain_from_data(
    restorer: Restorer,
    root: Path,
    config: HeadConfig,
    on_record: Callable[[HeadRecord], None] | None = None,
) -> Restorer:
    """`restorer` with its composition head retrained on the training data under `root` (the
    restoration training's split: its held-out DIV2K crops validate); its card records how."""
    photos, microscopy, validation = training_paths(root, VALIDATION_IMAGES)
    images = ImageSet(
        load_images(photos),
        load_microscopy(microscopy),
        load_real_pairs(real_pair_paths(root)),
    )
    net = copy.deepcopy(restorer.net)
    # torch's stubs omit Module.to's memory_format keyword
    net = net.to("cpu", memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    net = net.float()
    centres = [crop_centre(image, COMPOSITION_CROP) for image in load_images(validation)]
    crops = torch.from_numpy(np.stack(centres)).permute(0, 3, 1, 2).float() / 255.0
    encoded = validation_set(net, crops)
    record = train_head(net, images, encoded, config, on_record)
    training = {**restorer.card.training, "composition_head": record}
    note = " Composition head retrained by `allinone train-composition`, the rest frozen."
    description = restorer.card.description
    if note not in description:
        description += note
    card = replace(restorer.card, training=training, description=description)
    return Restorer(net, card, device="cpu")
