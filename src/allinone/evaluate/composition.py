"""The composition protocol: how well `Restorer.analyze` names the degradations of CBSD68 crops
under single and mixed synthetic degradations."""

from __future__ import annotations

import numpy as np
import torch

from allinone.degradations import apply, synthesize
from allinone.degradations.composition_set import (
    COMPOSITION_CROP,
    COMPOSITION_SEVERITIES,
    MIXTURES_PER_IMAGE,
    crop_centre,
)
from allinone.evaluate.context import Context
from allinone.evaluate.images import from_tensor, to_tensor
from allinone.evaluate.metrics import roc_auc
from allinone.evaluate.results import CompositionResult
from allinone.infer.restorer import Restorer
from allinone.types import DEGRADATIONS

THRESHOLD = 0.5
"""The probability at which a type counts as present (exact-set accuracy)."""


def _probabilities(restorer: Restorer, image: torch.Tensor) -> np.ndarray:
    composition = restorer.analyze(from_tensor(image[None]), axes="YXC")
    return np.array([composition.probabilities[name] for name in DEGRADATIONS])


def _single_set(ctx: Context, photos: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(one-hot labels, probabilities) for every photo x type x severity."""
    labels, scores = [], []
    for index, x in enumerate(photos):
        ctx.log(f"composition, single degradations: image {index + 1}")
        for column, name in enumerate(DEGRADATIONS):
            for k, severity in enumerate(COMPOSITION_SEVERITIES):
                generator = torch.Generator().manual_seed(1000 * index + 10 * column + k)
                degraded = apply(x, name, severity, generator)
                scores.append(_probabilities(ctx.restorer, degraded[0]))
                labels.append(np.eye(len(DEGRADATIONS))[column])
    return np.array(labels), np.array(scores)


def _mixture_set(ctx: Context, photos: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(multi-hot labels, probabilities) for `MIXTURES_PER_IMAGE` mixtures of every photo."""
    labels, scores = [], []
    for index, x in enumerate(photos):
        ctx.log(f"composition, mixtures: image {index + 1}")
        generator = torch.Generator().manual_seed(10**6 + index)
        batch = synthesize(
            x.repeat(MIXTURES_PER_IMAGE, 1, 1, 1),
            generator,
            mix_probability=1.0,
            clean_probability=0.0,
        )
        labels += list(batch.labels.numpy())
        scores += [_probabilities(ctx.restorer, image) for image in batch.degraded]
    return np.array(labels), np.array(scores)


def run_composition(ctx: Context) -> CompositionResult:
    """Top-1 accuracy and AUC of `Restorer.analyze` on synthetic single and mixed degradations."""
    photos = [to_tensor(crop_centre(clean, COMPOSITION_CROP)) for _, _, clean in ctx.cbsd68()]
    single_labels, single_scores = _single_set(ctx, photos)
    mix_labels, mix_scores = _mixture_set(ctx, photos)
    truth = single_labels.argmax(axis=1)
    hits = single_scores.argmax(axis=1) == truth
    predicted_sets = mix_scores >= THRESHOLD
    return CompositionResult(
        single_count=len(truth),
        single_top1=float(hits.mean()),
        single_top1_per_type={
            n: float(hits[truth == c].mean()) for c, n in enumerate(DEGRADATIONS)
        },
        single_auc=_auc_per_type(single_labels, single_scores),
        single_confusion=confusion(truth, single_scores.argmax(axis=1)),
        mixture_count=len(mix_labels),
        mixture_auc=_auc_per_type(mix_labels, mix_scores),
        mixture_exact=float((predicted_sets == mix_labels.astype(bool)).all(axis=1).mean()),
    )


def confusion(truth: np.ndarray, predicted: np.ndarray) -> dict[str, dict[str, int]]:
    """How often each true type (index into `DEGRADATIONS`) was read as each type."""
    return {
        name: {
            read: int(np.sum((truth == c) & (predicted == r)))
            for r, read in enumerate(DEGRADATIONS)
        }
        for c, name in enumerate(DEGRADATIONS)
    }


def _auc_per_type(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    return {n: roc_auc(labels[:, c], scores[:, c]) for c, n in enumerate(DEGRADATIONS)}
