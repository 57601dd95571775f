"""Fine-tuning: adapt a Restorer's network to the user's own (degraded, clean) pairs, or to noisy
images alone.

Given clean images, the network learns to turn each degraded image into its clean one. Given
none (every pair's clean image None), it learns from the noise itself: self-supervised
Neighbor2Neighbor training (`allinone.train.neighbours`), which removes pixel-independent noise
and learns to keep everything else, so it suits noisy images (microscopy, photos under synthetic
noise) and nothing else. Validation then scores blind spots (`neighbours.blind_spots`): pixels of
the validation part replaced by the mean of their neighbours before restoring, compared with their
noisy values. Such a PSNR sits below the true one by about the noise's share but ranks weights
alike (`benchmarks/ADAPTATION.md`: the sign of its gain was the truth's on 12 of 13 microscopy
images, the miss a +0.16 dB gain read as -0.04 dB). At the end, weights part of the way from the
original ones to the best adapted ones (`SHARES`) are validated too, since the score rates
adapted weights above their worth and a part of the change often restores better than all of it.
The best of all these is then scored afresh with the original weights on other blind spots
(`_other_blind_spots`), and replaces the original weights only when it beats them there by
`SIGNIFICANCE` standard errors, so that neither chance nor the choice itself picks adapted
weights: adaptation keeps the model where its prior already fits the image.

Each pair is split into 2-D planes (or RGB triplets) as `Restorer.restore` does, and both images
are normalised with the normalisation fitted on the degraded one, so the network learns in the
units it restores in. Validation restores through the restore chain that `options` (a
`RestoreOptions`) builds (`allinone.infer.chain`), so it scores what `restore` with those options
would output. Each region (a rectangle of `rois`, or the whole plane) is cut in two
across its longer side: the last `val_fraction` of it (at least `MIN_VAL` pixels) validates and
the rest trains, so no validation pixel is ever trained on.

Patches are square, `patch_size` rounded down to a multiple of 8 and shrunk to fit the smallest
training part; a training part under `MIN_PATCH` pixels on a side is refused (`InputError`).
The network trained is a deep copy: the Restorer passed in is never modified. Fine-tuning sits
one layer above inference: it takes a Restorer, which knows nothing of it.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from allinone.errors import AllInOneWarning, Cancelled, InputError
from allinone.infer.auto_exposure import choose_normalization
from allinone.infer.axes import PlaneLayout
from allinone.infer.chain import RestoreChain
from allinone.infer.local_gain import lift
from allinone.infer.normalize import Normalization, check_dtype, fit_normalization
from allinone.infer.options import RestoreOptions
from allinone.infer.pipeline import PlaneSource
from allinone.infer.restorer import Restorer
from allinone.infer.scene import Overview, SceneTone, overview_tone
from allinone.jobs import Cancel, Progress, ProgressCallback, drive, is_cancelled
from allinone.models import AllInOneNet
from allinone.tone_curve import ToneCurve
from allinone.train.neighbours import SPACING, blind_spots, neighbour_loss

__all__ = ["ADAPT_PREFIXES", "FinetuneResult", "finetune", "finetune_steps"]

ADAPT_PREFIXES = (
    "dictionary",
    "queries",
    "injections",
    "perturb",
    "composition",
    "degradation_net",
)
"""Parameter-name prefixes trained by `adapt="degradation"`."""
ADAPT_MODES = ("all", "degradation")
DEFAULT_STEPS = 200
MIN_PATCH = 16
MIN_VAL = 8
PATIENCE = 5
SIGNIFICANCE = 2.0
"""Standard errors by which self-supervised adaptation must beat the starting weights
(`_Best`); below that, the original weights are kept."""
SHARES = (0.25, 0.5, 0.75)
"""Shares of the adapted weights' change from the starting ones that self-supervised adaptation
also validates at its end (`_Best.interpolate`): the blind-spot score rates adapted weights above
their true worth, and a part of the change is often better than all of it
(`benchmarks/ADAPTATION.md`)."""
NDR_WEIGHT = 0.5
GRAD_CLIP = 1.0
MESSAGE = "fine-tuning"
MAX_VALUES = 2**28
"""Most float32 values fine-tuning holds in memory (1 GiB): a larger stack trains on evenly spaced
planes instead of all of them (`_planes`)."""
RESCALED = 100.0
"""How many times wider or narrower a pair's clean intensity span may be than its degraded one's
before `_check_pairs` warns: an 8-bit and a 16-bit copy of one image differ 257-fold, counts
against [0, 1] thousands-fold; noise, blur, haze and rain change the span a few times at most.
Extreme low light (x100 or more amplification) warns too, rightly saying what will be learnt."""

Rect = tuple[int, int, int, int]


@dataclass
class FinetuneResult:
    """A fine-tuned model and how the fine-tuning went."""

    restorer: Restorer
    """A new Restorer with the adapted network (the original one is untouched)."""
    psnr_before: float | None
    """Validation PSNR (dB, normalised units) of the original weights; None without validation.
    Self-supervised runs measure it against noisy pixels (see the module docstring)."""
    psnr_after: float | None
    """Validation PSNR of the returned weights (the best seen, or `psnr_before` when the
    original weights are kept); None without validation."""
    history: list[dict[str, float]]
    """One entry per step (`step`, `loss`, `lr`, and `val_psnr` on evaluation steps); with
    validation, a first entry `{"step": 0, "val_psnr": psnr_before}`."""
    steps: int
    """Training steps done."""
    seconds: float
    """Wall time of the whole job."""
    improved: bool
    """False when validation never beat the original weights (self-supervised: never by a
    significant margin, `SIGNIFICANCE`): the original weights are then returned. True otherwise
    (the adapted weights are returned), including without validation."""
    self_supervised: bool = False
    """True when the run learnt from noisy images alone (no clean images given)."""
    share: float = 1.0
    """Share of the adapted weights' change from the original ones that the returned weights
    hold: 1 for the adapted weights, 0 when the original ones are kept, between when a part of
    the change scored better (self-supervised runs, `SHARES`)."""

    def save(self, path: str | Path) -> Path:
        """Write the adapted model (`.safetensors` + JSON card); return the weights path."""
        return self.restorer.save(path)


@dataclass
class _Sample:
    """One region of one plane, normalised, as (h, w, 1 | 3) float32 arrays."""

    train: tuple[np.ndarray, np.ndarray | None]
    """(degraded, clean) of the training part; clean is None in self-supervised runs."""
    val: tuple[np.ndarray, np.ndarray] | None
    """(degraded, clean) of the validation part, or None without validation. In self-supervised
    runs, (the degraded part with blind spots, the degraded part)."""
    chain: RestoreChain
    """The restore chain of the pair (its layout, normalisation and the run's options)."""
    val_mask: np.ndarray | None = None
    """(h, w) bool: the pixels validation scores (the blind spots); None for all."""
    val_rect: Rect | None = None
    """Where the validation part lies in its plane."""
    overview: Overview | None = None
    """The plane's overview, where the chain judges haze at scene scale (`RestoreChain.scene`)
    and the sample validates: each evaluation reads the plane's haze correction from it."""


@dataclass
class _Budget:
    """When to stop, when to validate, and how far along the cosine schedule a step is."""

    steps: int | None
    seconds: float | None
    start: float = field(default_factory=time.perf_counter)
    next_eval: float = field(init=False)

    def __post_init__(self) -> None:
        self.next_eval = self.seconds / 10 if self.seconds else math.inf

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def fraction(self, done: int) -> float:
        """Share of the budget used after `done` steps, in [0, 1]."""
        by_steps = done / self.steps if self.steps else 0.0
        by_time = self.elapsed() / self.seconds if self.seconds else 0.0
        return min(1.0, max(by_steps, by_time))

    def spent(self, step: int, reserve: float) -> bool:
        """True when no step should follow `step` (`reserve`: seconds a step and an eval take)."""
        if self.steps and step >= self.steps:
            return True
        return bool(self.seconds and self.elapsed() + reserve >= self.seconds)

    def eval_due(self, step: int) -> bool:
        """Every tenth of the steps, or (with only a time budget) every tenth of the time."""
        if self.steps:
            return step % max(1, self.steps // 10) == 0
        if self.seconds and self.elapsed() >= self.next_eval:
            self.next_eval += self.seconds / 10
            return True
        return False

    def total(self, step: int) -> int:
        """The expected number of steps, as known after `step` steps."""
        if not self.seconds:
            assert self.steps is not None  # `_check_budget` sets one of the two
            return self.steps
        estimate = max(step + 1, int(step * self.seconds / max(self.elapsed(), 1e-9)))
        return min(self.steps, estimate) if self.steps else estimate


class _Best:
    """Validation so far: the starting PSNR, the best PSNR and its weights, evaluations since.

    With `significance`, the best weights count as an improvement only when their squared errors,
    pixel by pixel against the starting weights' on the same pixels, are lower by more than
    `significance` standard errors of the mean difference: a noisy score (blind spots) picked as
    the best of several evaluations otherwise prefers adapted weights by chance alone."""

    def __init__(self, net: AllInOneNet, significance: float | None = None) -> None:
        self.initial = self.state = _clone_state(net)
        self.significance = significance
        self.before: float | None = None
        self.psnr: float | None = None
        self.stale = 0
        self.cost = 0.0
        """Seconds the last evaluation took."""
        self._errors_before: np.ndarray | None = None
        self._errors_best: np.ndarray | None = None
        self.share = 1.0
        """Share of the adapted weights' change in the best weights (`interpolate`)."""

    @property
    def improved(self) -> bool:
        assert self.psnr is not None and self.before is not None  # set by the first `evaluate`
        if self.psnr <= self.before:
            return False
        if self.significance is None:
            return True
        assert self._errors_best is not None and self._errors_before is not None
        difference = self._errors_best - self._errors_before
        spread = difference.std() / math.sqrt(difference.size)
        return bool(difference.mean() < -self.significance * spread)

    @property
    def chosen(self) -> dict[str, torch.Tensor]:
        """The weights to keep: the best ones when they improved, else the starting ones."""
        return self.state if self.improved else self.initial

    def interpolate(self, scorer: Restorer, samples: list[_Sample]) -> None:
        """Validate each of `SHARES` of the way from the starting weights to the best ones,
        keeping any that beats the best; `share` says which weights are kept."""
        if self.state is self.initial:
            return
        adapted = self.state
        for share in SHARES:
            scorer.net.load_state_dict(_between(self.initial, adapted, share))
            kept = self.state
            self.evaluate(scorer, samples)
            if self.state is not kept:
                self.share = share

    def confirm(self, scorer: Restorer, samples: list[_Sample]) -> None:
        """Score the starting and the best weights afresh on `samples` (other blind spots than
        those the best were chosen on), and judge `improved` by those scores alone: the best of
        many noisy evaluations looks better on the pixels that chose it than it is."""
        if self.state is self.initial:
            return
        scores = []
        for state in (self.initial, self.state):
            scorer.net.load_state_dict(state)
            errors = _val_errors(scorer, samples)
            scores.append((_psnr(errors), errors))
        (self.before, self._errors_before), (self.psnr, self._errors_best) = scores

    def evaluate(self, scorer: Restorer, samples: list[_Sample]) -> float:
        """Validate `scorer`'s network, keeping its weights when they beat the best so far;
        return the PSNR."""
        started = time.perf_counter()
        errors = _val_errors(scorer, samples)
        psnr = _psnr(errors)
        self.cost = time.perf_counter() - started
        if self.psnr is None:
            self.before = self.psnr = psnr
            self._errors_before = self._errors_best = errors
        elif psnr > self.psnr:
            self.psnr, self.state, self.stale = psnr, _clone_state(scorer.net), 0
            self._errors_best = errors
        else:
            self.stale += 1
        return psnr


def finetune_steps(
    restorer: Restorer,
    pairs: Sequence[tuple[np.ndarray, np.ndarray | None]],
    *,
    axes: str | None = None,
    rois: Sequence[Rect] | None = None,
    steps: int | None = None,
    seconds: float | None = None,
    val_fraction: float = 0.2,
    lr: float = 1e-3,
    adapt: str = "all",
    patch_size: int = 64,
    batch_size: int = 8,
    seed: int = 0,
    cancel: Cancel = None,
    finish: Cancel = None,
    options: RestoreOptions | None = None,
) -> Generator[Progress, None, FinetuneResult]:
    """Fine-tune a copy of `restorer`'s network on (degraded, clean) pairs, or self-supervised on
    noisy images given as (noisy, None) pairs (see the module docstring).

    Stops after `steps` steps or `seconds` seconds, whichever comes first (200 steps when neither
    is given), or when validation has not improved for `PATIENCE` evaluations; the weights with
    the best validation PSNR are returned. Yields `Progress` after every step, with `metrics`
    (`step`, `loss`, `lr`, and `val_psnr` on evaluation steps); `cancel` is checked before every
    step and raises `Cancelled`; `finish` (a callable or Event-like, like `cancel`) ends the run
    early after the current step and still returns the best weights so far.

    `options` (`RestoreOptions`, None for the defaults) are those of the restore the weights are
    for: each pair is scaled by its degraded image's `options.scaling` (see `fit_normalization`),
    and validation restores through the chain they build, as `Restorer.restore(...,
    options=options)` would (tiling aside: each validation part is restored in one pass).
    """
    budget = _Budget(*_check_budget(steps, seconds))
    _check_options(val_fraction, lr, adapt, patch_size, batch_size)
    checked = _check_pairs(pairs)
    self_supervised = checked[0][1] is None
    rng = np.random.default_rng(seed)
    options = options or RestoreOptions()
    samples = _samples(checked, axes, rois, val_fraction, options, restorer.exposure_curve, rng)
    patch = _patch_size(samples, patch_size, AllInOneNet.multiple * (2 if self_supervised else 1))
    net = copy.deepcopy(restorer.net)
    scorer = Restorer(net, restorer.card, device=str(restorer.device), precision=restorer.precision)
    params = _select(net, adapt)
    optimizer = torch.optim.AdamW(params, lr=lr)
    autocast, scaler = _mixed_precision(restorer)
    areas = np.array([s.train[0].shape[0] * s.train[0].shape[1] for s in samples], float)
    best = _Best(net, SIGNIFICANCE if self_supervised else None) if val_fraction > 0 else None
    history: list[dict[str, float]] = []
    evaluations = 1 + (len(SHARES) + 2 if self_supervised else 0)
    """Evaluations after the last step, reserved in the time budget."""
    if best is not None:
        before = best.evaluate(scorer, samples)
        history.append({"step": 0, "val_psnr": before})
        yield Progress(0, budget.total(0), MESSAGE, dict(history[-1]))
    net.train()
    step, stop = 0, False
    while not stop:
        if is_cancelled(cancel):
            raise Cancelled("fine-tuning cancelled; the original model is unchanged")
        step_lr = lr * 0.5 * (1 + math.cos(math.pi * budget.fraction(step)))
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        started = time.perf_counter()
        x, y = _batch(samples, areas / areas.sum(), rng, patch, batch_size, restorer.device)
        loss = _train_step(net, optimizer, scaler, params, autocast, x, y, rng)
        step_cost = time.perf_counter() - started
        step += 1
        if not math.isfinite(loss):
            raise InputError(
                f"fine-tuning diverged at step {step} (the loss is not finite); "
                "lower the learning rate"
            )
        entry = {"step": step, "loss": loss, "lr": step_lr}
        stop = budget.spent(step, step_cost + (best.cost * evaluations if best else 0.0))
        stop = stop or is_cancelled(finish)
        if best is not None and (stop or budget.eval_due(step)):
            entry["val_psnr"] = best.evaluate(scorer, samples)
            stop = stop or best.stale >= PATIENCE
        history.append(entry)
        yield Progress(step, step if stop else budget.total(step), MESSAGE, dict(entry))
    if best is not None:
        if self_supervised:
            best.interpolate(scorer, samples)
            best.confirm(scorer, _other_blind_spots(samples))
        net.load_state_dict(best.chosen)
    training = {
        "steps": step,
        "seconds": round(budget.elapsed(), 3),
        "lr": lr,
        "adapt": adapt,
        "val_fraction": val_fraction,
        "pairs": len(checked),
        "patch_size": patch,
        "self_supervised": self_supervised,
    }
    share = 1.0 if best is None else best.share if best.improved else 0.0
    if best is not None and self_supervised:
        training["share"] = share
    psnr_before, psnr_after = (None, None)
    if best is not None:
        psnr_before, psnr_after = best.before, best.psnr if best.improved else best.before
    return FinetuneResult(
        restorer=_adapted_restorer(restorer, net, training, psnr_before, psnr_after),
        psnr_before=psnr_before,
        psnr_after=psnr_after,
        history=history,
        steps=step,
        seconds=budget.elapsed(),
        improved=best is None or best.improved,
        self_supervised=self_supervised,
        share=share,
    )


def finetune(
    restorer: Restorer,
    pairs: Sequence[tuple[np.ndarray, np.ndarray | None]],
    *,
    progress: ProgressCallback | None = None,
    cancel: Cancel = None,
    **settings: Any,
) -> FinetuneResult:
    """Fine-tune a copy of `restorer`'s network and return a `FinetuneResult`; `settings` are
    the keywords of `finetune_steps`, `progress(done, total)` follows each step."""
    return drive(finetune_steps(restorer, pairs, cancel=cancel, **settings), progress, cancel)


# --- checks -------------------------------------------------------------------------------------


def _check_budget(steps: int | None, seconds: float | None) -> tuple[int | None, float | None]:
    if steps is None and seconds is None:
        return DEFAULT_STEPS, None
    if steps is not None and (int(steps) != steps or steps < 1):
        raise InputError(f"steps must be a positive integer, got {steps}")
    if seconds is not None and not (seconds > 0 and math.isfinite(seconds)):
        raise InputError(f"seconds must be a positive number, got {seconds}")
    return (None if steps is None else int(steps)), seconds


def _check_options(
    val_fraction: float, lr: float, adapt: str, patch_size: int, batch_size: int
) -> None:
    if not 0 <= val_fraction < 1:
        raise InputError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"the learning rate must be a positive number, got {lr}")
    if adapt not in ADAPT_MODES:
        raise InputError(f"unknown adapt {adapt!r}; use one of {', '.join(ADAPT_MODES)}")
    if patch_size < MIN_PATCH:
        raise InputError(f"patch_size must be at least {MIN_PATCH}, got {patch_size}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")


def _check_pairs(pairs) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The pairs as a list, each with two arrays of the same shape and usable dtypes, or all
    with a clean image of None (self-supervised)."""
    if hasattr(pairs, "shape") or not pairs:
        raise InputError("pairs must be a non-empty list of (degraded, clean) arrays")
    checked: list[tuple[np.ndarray, np.ndarray | None]] = []
    for n, pair in enumerate(pairs):
        if hasattr(pair, "shape") or len(pair) != 2:
            raise InputError(f"pair {n} is not a (degraded, clean) pair of arrays")
        degraded, clean = pair
        if (clean is None) != (pairs[0][1] is None):
            raise InputError(
                "some pairs have a clean image and some do not: fine-tune either on pairs or "
                "on noisy images alone (self-supervised), not on both at once"
            )
        if clean is None:
            check_dtype(degraded.dtype)
            checked.append((degraded, None))
            continue
        if tuple(degraded.shape) != tuple(clean.shape):
            raise InputError(
                f"pair {n}: the degraded image has shape {tuple(degraded.shape)} but the clean "
                f"one has {tuple(clean.shape)}; they must match pixel for pixel"
            )
        check_dtype(degraded.dtype)
        check_dtype(clean.dtype)
        _warn_if_rescaled(n, degraded, clean)
        checked.append((degraded, clean))
    return checked


def _warn_if_rescaled(n: int, degraded: np.ndarray, clean: np.ndarray) -> None:
    """Warn when the clean image's intensity span (0.1-99.9 percentiles) differs from the
    degraded one's by more than `RESCALED`: most likely the two were saved on different scales
    (8 and 16 bits, counts and [0, 1]), which the model would learn as part of the restoration."""
    spans = [fit_normalization(image, "percentile").scale for image in (degraded, clean)]
    ratio = spans[1] / spans[0]
    if max(ratio, 1 / ratio) <= RESCALED:
        return
    factor, wider = (ratio, "wider") if ratio > 1 else (1 / ratio, "narrower")
    warnings.warn(
        AllInOneWarning(
            f"pair {n}: the clean image's intensity span is {factor:,.0f} times {wider} than the "
            f"degraded one's ({clean.dtype} and {degraded.dtype}); fine-tuning will learn that "
            "rescaling. If both show the scene at one exposure, save them on the same scale."
        ),
        stacklevel=2,
    )


# --- data ---------------------------------------------------------------------------------------


def _samples(
    pairs: list[tuple[np.ndarray, np.ndarray | None]],
    axes: str | None,
    rois: Sequence[Rect] | None,
    val_fraction: float,
    options: RestoreOptions,
    estimate: Callable[[np.ndarray], ToneCurve],
    rng: np.random.Generator,
) -> list[_Sample]:
    """Every region of every plane of every pair, split into training and validation parts, with
    the pair's restore chain under `options`; ``"auto"`` scaling resolved as `restore` resolves it
    (`choose_normalization`, with the exposure estimator `estimate`). Pairs without a clean image
    validate on blind spots of their validation part, placed with `rng`."""
    if rois is not None and len(rois) == 0:
        raise InputError("rois is empty: give at least one rectangle, or None for whole images")
    samples = []
    for degraded, clean in pairs:
        layout = PlaneLayout.of(degraded.shape, axes)
        norm = choose_normalization(degraded, layout, options.scaling, estimate)
        norms = norm, dataclasses.replace(norm, curve=None)  # the target is not under-exposed
        chain = RestoreChain(options, layout, norm)
        planes = PlaneSource(layout, degraded, norm)
        regions = _regions(layout.plane_shape, rois)
        splits = [_split(region, val_fraction) for region in regions]
        values = sum((y1 - y0) * (x1 - x0) for y0, y1, x0, x1 in regions) * (3 if layout.rgb else 1)
        for index in _planes(layout, values * (1 if clean is None else 2), len(pairs)):
            source = layout.get(degraded, index)
            target = None if clean is None else layout.get(clean, index)
            view = _overview(chain, planes, index, val_fraction)
            for train, val in splits:
                val_part, mask = (
                    (None, None) if val is None else _val_part(source, target, val, norms, rng)
                )
                samples.append(
                    _Sample(
                        train=_part(source, target, train, norms),
                        val=val_part,
                        chain=chain,
                        val_mask=mask,
                        val_rect=val,
                        overview=view,
                    )
                )
    return samples


def _overview(
    chain: RestoreChain, planes: PlaneSource, index: tuple[int, ...], val_fraction: float
) -> Overview | None:
    """The overview of plane `index` that validation reads its haze from, where it needs one."""
    if val_fraction == 0 or not chain.scene:
        return None
    return chain.overview(planes, index, planes.fill_value(index))


def _part(
    source: np.ndarray,
    target: np.ndarray | None,
    rect: Rect,
    norms: tuple[Normalization, Normalization],
) -> tuple[np.ndarray, np.ndarray | None]:
    """The rectangle of a plane and of its clean plane (None stays None), normalised."""
    degraded = _normalised(source, rect, norms[0])
    return degraded, None if target is None else _normalised(target, rect, norms[1])


def _val_part(
    source: np.ndarray,
    target: np.ndarray | None,
    rect: Rect,
    norms: tuple[Normalization, Normalization],
    rng: np.random.Generator,
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray | None]:
    """A validation part and the pixels it is scored on: `_part` and all pixels, or without a
    clean plane its degraded part with blind spots, the degraded part, and the blind spots."""
    degraded, clean = _part(source, target, rect, norms)
    if clean is not None:
        return (degraded, clean), None
    masked, mask = blind_spots(degraded, rng)
    return (masked, degraded), mask


def _other_blind_spots(samples: list[_Sample]) -> list[_Sample]:
    """`samples` validated on other blind spots: each block's pixel diagonally opposite the one
    `blind_spots` masked (`SPACING` // 2 rows and columns away), so no pixel is scored twice."""
    others = []
    for sample in samples:
        assert sample.val is not None and sample.val_mask is not None  # self-supervised
        noisy = sample.val[1]
        dy, dx = (int(v) % SPACING for v in np.argwhere(sample.val_mask)[0])
        offset = ((dy + SPACING // 2) % SPACING, (dx + SPACING // 2) % SPACING)
        masked, mask = blind_spots(noisy, np.random.default_rng(0), offset)
        others.append(dataclasses.replace(sample, val=(masked, noisy), val_mask=mask))
    return others


def _regions(plane_shape: tuple[int, int], rois: Sequence[Rect] | None) -> list[Rect]:
    """The rectangles (y0, y1, x0, x1) clipped to the plane; the whole plane without `rois`."""
    height, width = plane_shape
    if rois is None:
        return [(0, height, 0, width)]
    regions = []
    for n, roi in enumerate(rois):
        if len(roi) != 4:
            raise InputError(f"region {n} must be (y0, y1, x0, x1), got {tuple(roi)}")
        y0, y1, x0, x1 = (int(round(v)) for v in roi)
        y0, y1, x0, x1 = min(y0, y1), max(y0, y1), min(x0, x1), max(x0, x1)
        clipped = max(y0, 0), min(y1, height), max(x0, 0), min(x1, width)
        if clipped[1] <= clipped[0] or clipped[3] <= clipped[2]:
            raise InputError(
                f"region {n} (y {y0}:{y1}, x {x0}:{x1}) lies outside the {height}x{width} image"
            )
        regions.append(clipped)
    return regions


def _split(region: Rect, val_fraction: float) -> tuple[Rect, Rect | None]:
    """(training, validation) parts: validation is the last strip across the longer side."""
    y0, y1, x0, x1 = region
    along_x = x1 - x0 >= y1 - y0
    start, end = (x0, x1) if along_x else (y0, y1)
    size = end - start
    val = 0 if val_fraction == 0 else max(MIN_VAL, round(val_fraction * size))
    if size - val < MIN_PATCH or min(y1 - y0, x1 - x0) < MIN_PATCH:
        raise InputError(
            f"the region y {y0}:{y1}, x {x0}:{x1} is too small: its training part must be at "
            f"least {MIN_PATCH}x{MIN_PATCH} pixels after setting aside {val} pixels for "
            f"validation (val_fraction {val_fraction}); draw a larger rectangle"
        )
    cut = end - val
    if val == 0:
        return region, None
    if along_x:
        return (y0, y1, x0, cut), (y0, y1, cut, x1)
    return (y0, cut, x0, x1), (cut, y1, x0, x1)


def _normalised(plane: np.ndarray, rect: Rect, norm: Normalization) -> np.ndarray:
    """The rectangle of a (H, W) or (H, W, 3|4) plane as (h, w, 1 | 3) float32 network units."""
    y0, y1, x0, x1 = rect
    crop = plane[y0:y1, x0:x1]
    crop = crop[:, :, None] if crop.ndim == 2 else crop[:, :, :3]
    values = norm.forward(crop)
    return np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0)


def _patch_size(samples: list[_Sample], patch_size: int, multiple: int) -> int:
    """`patch_size` rounded down to a `multiple` and shrunk to the smallest training part."""
    smallest = min(min(s.train[0].shape[:2]) for s in samples)
    return min(patch_size, smallest) // multiple * multiple


def _batch(
    samples: list[_Sample],
    weights: np.ndarray,
    rng: np.random.Generator,
    patch: int,
    batch_size: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random flipped and rotated patches (degraded, clean), drawn in proportion to area; clean
    is None in self-supervised runs. Patches of planes that restoring lifts (local gain) are
    lifted alike (`_lifted`), so the network learns on what it will restore."""
    degraded: list[np.ndarray] = []
    clean: list[np.ndarray] = []
    chosen = rng.choice(len(samples), size=batch_size, p=weights)
    for index in chosen:
        source, target = samples[index].train
        y = rng.integers(0, source.shape[0] - patch + 1)
        x = rng.integers(0, source.shape[1] - patch + 1)
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        for out, image in ((degraded, source), (clean, target)):
            if image is None:
                continue
            crop = np.rot90(image[y : y + patch, x : x + patch], turns)
            out.append(crop[:, ::-1] if flip else crop)
    tops = [samples[index].chain.gain_top for index in chosen]
    return _lifted(_to_tensor(degraded, device), _to_tensor(clean, device) if clean else None, tops)


def _lifted(
    degraded: torch.Tensor, clean: torch.Tensor | None, tops: list[float | None]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each patch with a top gain `lift`ed as restoring lifts its tiles, its clean patch times
    the same gain (what the network's output must be before restoring divides by it)."""
    for i, top in enumerate(tops):
        if top is None:
            continue
        degraded[i : i + 1], gain = lift(degraded[i : i + 1], top)
        if clean is not None:
            clean[i : i + 1] = clean[i : i + 1] * gain
    return degraded, clean


def _to_tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """(h, w, 1 | 3) arrays → a (B, 3, h, w) tensor, grey replicated to three channels."""
    rgb = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in images]
    host = torch.from_numpy(np.ascontiguousarray(np.stack(rgb))).permute(0, 3, 1, 2)
    return host.to(device).contiguous(memory_format=torch.channels_last)


# --- training -----------------------------------------------------------------------------------


def _out_of_memory_is_an_input_error(function: Callable) -> Callable:
    """Report running out of device memory as an `InputError` saying what to change."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except torch.cuda.OutOfMemoryError as error:
            raise InputError(
                "the device ran out of memory while fine-tuning; lower the batch size or the "
                "patch size, or fine-tune on the CPU"
            ) from error

    return run


def _select(net: AllInOneNet, adapt: str) -> list[torch.nn.Parameter]:
    """Mark the parameters `adapt` trains as requiring gradients; return them."""
    chosen = []
    for name, param in net.named_parameters():
        trained = adapt == "all" or name.split(".", 1)[0] in ADAPT_PREFIXES
        param.requires_grad_(trained)
        if trained:
            chosen.append(param)
    return chosen


def _mixed_precision(restorer: Restorer) -> tuple[Callable, torch.amp.GradScaler]:
    """An autocast context factory (reduced precision on CUDA only) and its gradient scaler."""
    dtype = restorer.autocast_dtype
    if restorer.device.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext, torch.amp.GradScaler("cpu", enabled=False)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    return lambda: torch.autocast("cuda", dtype=dtype), scaler


@_out_of_memory_is_an_input_error
def _train_step(
    net: AllInOneNet,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[torch.nn.Parameter],
    autocast: Callable,
    degraded: torch.Tensor,
    clean: torch.Tensor | None,
    rng: np.random.Generator,
) -> float:
    """One optimisation step; returns the loss.

    Loss: L1(restored, clean), plus with NDR `NDR_WEIGHT` * L1(degrade(clean), degraded); without
    a clean batch, the self-supervised `neighbour_loss` (its neighbours drawn with `rng`).
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast():
        if clean is None:
            loss = neighbour_loss(lambda x: net(x).restored, degraded, rng)
        else:
            loss = _paired_loss(net, degraded, clean)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


def _paired_loss(net: AllInOneNet, degraded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    out = net(degraded)
    loss = F.l1_loss(out.restored.float(), clean)
    if net.preset.ndr:
        redegraded = net.degrade(clean, out.representation)
        loss = loss + NDR_WEIGHT * F.l1_loss(redegraded.float(), degraded)
    return loss


@_out_of_memory_is_an_input_error
def _val_errors(scorer: Restorer, samples: list[_Sample]) -> np.ndarray:
    """Squared errors (data range 1) of every scored value of every validation part, each part
    restored in one pass by `scorer`'s network through its sample's restore chain, as `restore`
    restores a tile: its plane's scene-scale haze correction read afresh from the plane's
    overview, then the network (or the 8-view ensemble), tone keeping, the clipping correction
    and the never-brighter guard, each where the chain runs it.

    Parts are padded by reflection to a multiple of 8 and cropped back; grey outputs are the mean
    of the three channels, as in `restore`; outputs and targets are then clipped to [0, 1]. Only
    the pixels of a part's `val_mask` count, where it has one.
    """
    net, device = scorer.net, scorer.device
    was_training = net.training
    net.eval()
    tones: dict[int, SceneTone] = {}
    errors = []
    with torch.inference_mode():
        for sample in samples:
            assert sample.val is not None and sample.val_rect is not None  # val_fraction > 0
            source, target = sample.val
            if sample.overview is not None:
                key = id(sample.overview)
                if key not in tones:
                    tones[key] = overview_tone(scorer.overview_pass, sample.overview)
                y0, y1, x0, x1 = sample.val_rect
                source = tones[key].apply(source, np.arange(y0, y1), np.arange(x0, x1))
            x = _to_tensor([source], device)
            height, width = x.shape[-2:]
            pad = (0, -width % net.multiple, 0, -height % net.multiple)
            padded = F.pad(x, pad, mode="reflect").contiguous(memory_format=torch.channels_last)
            restored = sample.chain.tile_steps(scorer.tile_pass)(padded, None)
            restored = restored[..., :height, :width]
            if target.shape[2] == 1:
                restored = restored.mean(dim=1, keepdim=True)
            restored = restored.clamp(0, 1)
            expected = torch.from_numpy(target).permute(2, 0, 1)[None].to(device).clamp(0, 1)
            squared = (restored - expected) ** 2
            if sample.val_mask is not None:
                squared = squared[..., torch.from_numpy(sample.val_mask).to(device)]
            errors.append(squared.double().flatten().cpu().numpy())
    net.train(was_training)
    return np.concatenate(errors)


def _psnr(errors: np.ndarray) -> float:
    """PSNR (dB, data range 1) of squared errors."""
    return 10 * math.log10(1 / max(float(errors.mean()), 1e-10))


def _between(
    start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], share: float
) -> dict[str, torch.Tensor]:
    """The weights `share` of the way from `start` to `end` (other buffers: `end`'s)."""
    return {
        k: torch.lerp(start[k], v, share) if v.is_floating_point() else v for k, v in end.items()
    }


def _clone_state(net: AllInOneNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _adapted_restorer(
    parent: Restorer,
    net: AllInOneNet,
    training: dict,
    psnr_before: float | None,
    psnr_after: float | None,
) -> Restorer:
    """A new Restorer around the adapted network, its card naming the parent model."""
    for param in net.parameters():
        param.requires_grad_(True)
    name = parent.card.name
    card = dataclasses.replace(
        parent.card,
        name=f"{name}-finetuned",
        parent=name,
        training={"finetune": training},
        metrics={"val_psnr_before": psnr_before, "val_psnr_after": psnr_after},
        description=f"{name} fine-tuned on {_data_text(training)} for {training['steps']} steps",
        weights=None,
    )
    return Restorer(net, card, device=str(parent.device), precision=parent.precision)


def _data_text(training: dict) -> str:
    if training["self_supervised"]:
        return f"{training['pairs']} noisy image(s), self-supervised (Neighbor2Neighbor)"
    return f"{training['pairs']} pair(s)"


def _planes(layout: PlaneLayout, values: int, pairs: int) -> list[tuple[int, ...]]:
    """The plane indices of one of `pairs` pairs to train on, each plane holding `values` values:
    all of them, or evenly spaced ones within its share of `MAX_VALUES` (with a warning)."""
    indices = list(layout.indices())
    room = max(1, MAX_VALUES // (pairs * values))
    if room >= len(indices):
        return indices
    warnings.warn(
        AllInOneWarning(
            f"fine-tuning on {room} of the {len(indices)} planes, evenly spaced, to stay within "
            f"{MAX_VALUES * 4 // 2**30} GiB of memory"
        ),
        stacklevel=3,
    )
    return [indices[i] for i in np.linspace(0, len(indices) - 1, room).round().astype(int)]
