"""Fine-tuning on the CPU with the tiny preset: small synthetic pairs, a few steps."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import smoothing_forward
from scipy.ndimage import gaussian_filter

from allinone.errors import AllInOneWarning, Cancelled, InputError
from allinone.infer.normalize import Normalization
from allinone.infer.options import RestoreOptions
from allinone.infer.restorer import Restorer
from allinone.train import finetune as tuning
from allinone.train.finetune import ADAPT_PREFIXES, FinetuneResult, finetune, finetune_steps

FAST = {"patch_size": 32, "batch_size": 4}
SIZE = 64
STEPS = 20


def _pair(seed: int = 0, shape: tuple[int, ...] = (SIZE, SIZE)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth uint16 image and a noisy copy of it."""
    rng = np.random.default_rng(seed)
    smooth = gaussian_filter(rng.standard_normal(shape), 3)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    noisy = smooth + rng.normal(0, 0.1, shape)
    clean = (smooth * 40_000 + 10_000).astype(np.uint16)
    degraded = np.clip(noisy * 40_000 + 10_000, 0, 65_535).astype(np.uint16)
    return degraded, clean


def _tiny() -> Restorer:
    return Restorer.from_pretrained("tiny", device="cpu")


def _state(restorer: Restorer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in restorer.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def tuned() -> tuple[Restorer, dict[str, torch.Tensor], FinetuneResult, list]:
    """One short run shared by the tests that only read its result."""
    restorer = _tiny()
    before = _state(restorer)
    updates: list = []
    job = finetune_steps(restorer, [_pair()], steps=STEPS, **FAST)
    while True:
        try:
            updates.append(next(job))
        except StopIteration as stop:
            return restorer, before, stop.value, updates


def test_finetuning_raises_validation_psnr(tuned) -> None:
    restorer, _, result, _ = tuned
    assert result.improved and result.steps == STEPS
    assert result.psnr_after > result.psnr_before + 0.5
    degraded, clean = _pair()
    val = np.s_[:, SIZE - round(0.2 * SIZE) :]  # the validation strip: the last 20 % of columns

    def error(r: Restorer) -> float:
        restored = r.restore(degraded, tile=0).astype(float)
        return float(np.mean((restored[val] - clean[val]) ** 2))

    assert error(result.restorer) < error(restorer)


def test_validation_scores_what_restore_gives() -> None:
    """The PSNR before fine-tuning is that of `restore` on the validation strip (the last 16
    columns here), its keep-tone guard included."""
    degraded, clean = ((image / 256).astype(np.uint8) for image in _pair(3, (SIZE, 80)))
    restorer = _tiny()
    result = finetune(
        restorer,
        [(degraded, clean)],
        steps=1,
        val_fraction=0.2,
        options=RestoreOptions(scaling="range"),
        **FAST,
    )
    restored = restorer.restore(np.ascontiguousarray(degraded[:, -16:]), tile=0, scaling="range")
    error = restored.astype(float) - clean[:, -16:]
    expected = 10 * np.log10(255**2 / np.mean(error**2))
    assert result.psnr_before == pytest.approx(expected, abs=0.1)


def _first_validation(restorer: Restorer, pair: tuple, options: RestoreOptions) -> float:
    """The validation PSNR of `restorer`'s own weights under `options`."""
    steps = finetune_steps(restorer, [pair], steps=1, val_fraction=0.2, options=options, **FAST)
    first = next(steps)
    steps.close()
    return first.metrics["val_psnr"]


@pytest.mark.parametrize(
    "options",
    [
        RestoreOptions(scaling="range"),
        RestoreOptions(scaling="range", ensemble=True),
        RestoreOptions(scaling="range", tone=False),
    ],
    ids=["default", "ensemble", "no-tone"],
)
def test_validation_restores_through_the_chain_of_its_options(
    random_restorer, monkeypatch, options: RestoreOptions
) -> None:
    """Float images in [0, 1], where a part restored in one pass is what `restore` gives for it
    alone without context: the PSNR before fine-tuning is exactly that of `restore` with the
    same options."""
    monkeypatch.setitem(random_restorer.__dict__, "reach", 0)
    degraded, clean = (image.astype(np.float32) / 65_535 for image in _pair(4, (48, 80)))
    strip = np.s_[:, -16:]
    one_pass = dataclasses.replace(options, tile=0, overlap=0)
    restored = random_restorer.restore(np.ascontiguousarray(degraded[strip]), options=one_pass)
    error = np.mean((np.clip(restored, 0, 1) - clean[strip]) ** 2, dtype=np.float64)
    expected = 10 * np.log10(1 / error)
    assert _first_validation(random_restorer, (degraded, clean), options) == pytest.approx(
        expected, rel=1e-12
    )


@pytest.mark.usefixtures("sure_of_haze")
def test_validation_removes_scene_haze_as_restore_does(random_restorer) -> None:
    """A colour pair whose degraded image is the clean one under a veil that the stand-in
    overview pass takes off: with scene haze, validation and restore both come closer to the clean
    image than without."""
    smooth = gaussian_filter(np.random.default_rng(5).random((144, 160, 3)), (4, 4, 0))
    clean = (60 + 140 * (smooth - smooth.min()) / np.ptp(smooth)).astype(np.uint8)
    degraded = clean + np.uint8(26)
    on, off = RestoreOptions(scaling="range"), RestoreOptions(scaling="range", scene_haze=False)

    def error(options: RestoreOptions) -> float:
        restored = random_restorer.restore(degraded, options=options).astype(float)
        return float(np.mean((restored[:, -32:] - clean[:, -32:]) ** 2))

    assert error(on) < error(off) / 4
    with_haze = _first_validation(random_restorer, (degraded, clean), on)
    assert with_haze > _first_validation(random_restorer, (degraded, clean), off) + 6


def test_validation_allows_for_noise_clipped_at_the_dtypes_end(monkeypatch) -> None:
    """As `restore` does: a bright, noisy uint8 pair restored by a smoothing stand-in scores
    over 2 dB better with the allowance than without it (the clipped noise's bias kept) before
    fine-tuning."""
    rng = np.random.default_rng(0)
    clean = np.full((64, 80), 250, np.uint8)
    degraded = np.clip(np.rint(250 + rng.normal(0, 25, clean.shape)), 0, 255).astype(np.uint8)
    restorer = _tiny()
    restorer.net.forward = smoothing_forward  # copied with the network

    def before() -> float:
        steps = finetune_steps(restorer, [(degraded, clean)], steps=1, val_fraction=0.2, **FAST)
        first = next(steps)  # the validation before any step: the stand-in cannot train
        steps.close()
        return first.metrics["val_psnr"]

    allowed = before()
    monkeypatch.setattr(Normalization, "clip_bounds", lambda self: None)
    assert allowed > before() + 2


def test_original_restorer_is_untouched(tuned) -> None:
    restorer, before, result, _ = tuned
    assert _same(_state(restorer), before)
    assert result.restorer is not restorer and result.restorer.net is not restorer.net
    assert not _same(_state(result.restorer), before)


def test_progress_and_history(tuned) -> None:
    _, _, result, updates = tuned
    assert [u.done for u in updates] == list(range(STEPS + 1))
    assert updates[-1].total == updates[-1].done == STEPS
    assert all(u.message == "fine-tuning" for u in updates)
    assert updates[0].metrics == {"step": 0, "val_psnr": result.psnr_before}
    assert all({"step", "loss"} <= u.metrics.keys() for u in updates[1:])
    evaluated = [u.metrics["step"] for u in updates if "val_psnr" in u.metrics]
    assert evaluated == list(range(0, STEPS + 1, STEPS // 10))
    assert max(h["val_psnr"] for h in result.history if "val_psnr" in h) == result.psnr_after
    assert len(result.history) == STEPS + 1 and result.seconds > 0


def test_card_and_save_reload(tuned, tmp_path: Path) -> None:
    _, _, result, _ = tuned
    card = result.restorer.card
    assert card.parent == "tiny"
    assert card.training["finetune"]["steps"] == STEPS
    assert card.training["finetune"]["adapt"] == "all"
    assert card.metrics == {
        "val_psnr_before": result.psnr_before,
        "val_psnr_after": result.psnr_after,
    }
    path = result.save(tmp_path / "mine")
    assert path == tmp_path / "mine.safetensors" and path.with_suffix(".json").is_file()
    reloaded = Restorer.from_pretrained(path, device="cpu")
    assert reloaded.card.parent == "tiny"
    degraded, _ = _pair(1)
    expected = result.restorer.restore(degraded, tile=0)
    np.testing.assert_array_equal(reloaded.restore(degraded, tile=0), expected)


def test_adapt_degradation_trains_only_the_degradation_modules() -> None:
    restorer = _tiny()
    before = _state(restorer)
    result = finetune(restorer, [_pair()], steps=2, val_fraction=0, adapt="degradation", **FAST)
    after = _state(result.restorer)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.split(".", 1)[0] in ADAPT_PREFIXES for k in changed)
    assert any(k.startswith("queries") for k in changed)
    assert result.psnr_before is None and result.psnr_after is None and result.improved


def test_same_seed_same_run() -> None:
    def losses(seed: int) -> list[float]:
        result = finetune(_tiny(), [_pair()], steps=3, seed=seed, val_fraction=0, **FAST)
        return [entry["loss"] for entry in result.history]

    first = losses(0)
    assert losses(0) == first
    assert losses(1) != first


def test_cancel_stops_and_leaves_the_original_untouched() -> None:
    restorer = _tiny()
    before = _state(restorer)
    stop = threading.Event()
    progress: list[int] = []

    def on_progress(done: int, total: int) -> None:
        progress.append(done)
        if done >= 1:
            stop.set()

    with pytest.raises(Cancelled):
        finetune(restorer, [_pair()], steps=50, progress=on_progress, cancel=stop, **FAST)
    assert progress[-1] == 1
    assert _same(_state(restorer), before)
    job = finetune_steps(restorer, [_pair()], steps=50, cancel=lambda: True, **FAST)
    next(job)  # the first validation
    with pytest.raises(Cancelled):
        next(job)


def test_finish_ends_early_and_keeps_the_best_weights() -> None:
    restorer = _tiny()
    finish = threading.Event()

    def on_progress(done: int, total: int) -> None:
        if done == 3:
            finish.set()

    result = finetune(restorer, [_pair()], steps=200, progress=on_progress, finish=finish, **FAST)
    assert result.steps == 4
    assert result.history[-1]["step"] == 4 and "val_psnr" in result.history[-1]
    assert result.psnr_after >= result.psnr_before


def test_rois_and_rgb_stacks() -> None:
    degraded, clean = _pair(2, (2, 80, 96))
    result = finetune(
        _tiny(), [(degraded, clean)], axes="ZYX", rois=[(0, 60, 10, 200)], steps=1, **FAST
    )
    assert result.steps == 1 and result.psnr_before is not None
    rgb = tuple(np.stack([a] * 3, axis=-1) for a in _pair(3))
    assert finetune(_tiny(), [rgb], steps=1, **FAST).steps == 1


def test_no_improvement_returns_the_original_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    errors = iter([np.full(10, 1e-3)] + [np.full(10, 1e-2)] * 100)  # 30 dB, then 20 dB
    monkeypatch.setattr(tuning, "_val_errors", lambda *args: next(errors))
    restorer = _tiny()
    result = finetune(restorer, [_pair()], steps=20, **FAST)
    assert result.steps == 2 * tuning.PATIENCE  # evaluated every 2 steps, never better
    assert not result.improved and result.psnr_before == result.psnr_after == pytest.approx(30.0)
    assert _same(_state(result.restorer), _state(restorer))


@pytest.mark.parametrize(
    ("pairs", "options", "message"),
    [
        ([(np.zeros((64, 64)), np.zeros((64, 32)))], {}, r"\(64, 64\).*\(64, 32\)"),
        ([_pair()], {"rois": [(100, 120, 0, 64)]}, "outside"),
        ([_pair()], {"rois": [(0, 20, 0, 20)]}, "too small"),
        ([_pair()], {"rois": []}, "at least one rectangle"),
        ([_pair()], {"adapt": "everything"}, "unknown adapt"),
        ([_pair()], {"val_fraction": 1.0}, "val_fraction"),
        ([_pair()], {"steps": 0}, "steps"),
        ([], {}, "non-empty"),
        (_pair(), {}, r"not a \(degraded, clean\) pair"),
    ],
)
def test_bad_inputs(pairs, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        finetune(_tiny(), pairs, **options)


def test_a_pair_on_different_scales_is_warned_about() -> None:
    degraded, clean = _pair()
    as_fraction = (clean / 65_535).astype(np.float32)  # the clean one saved in [0, 1]
    with pytest.warns(
        AllInOneWarning, match=r"pair 0: .* [\d,]+ times narrower .*float32 and uint16"
    ):
        finetune(_tiny(), [(degraded, as_fraction)], steps=1, **FAST)
    darker = (clean // 2, clean)  # an exposure change, well within what a pair may hold
    with warnings.catch_warnings():
        warnings.simplefilter("error", AllInOneWarning)
        finetune(_tiny(), [darker], steps=1, **FAST)


def test_self_supervised_finetuning_learns_from_the_noise_alone() -> None:
    """Given the noisy image alone, the restoration of the held-out strip gets closer to the clean
    image it never saw, and the run says it was self-supervised."""
    size = 4 * SIZE  # enough blind spots for a significant gain (`tuning.SIGNIFICANCE`)
    degraded, clean = _pair(shape=(size, size))
    restorer = _tiny()
    result = finetune(restorer, [(degraded, None)], steps=STEPS, seed=1, **FAST)
    val = np.s_[:, size - round(0.2 * size) :]  # the validation strip

    def error(r: Restorer) -> float:
        restored = r.restore(degraded, tile=0).astype(float)
        return float(np.mean((restored[val] - clean[val]) ** 2))

    assert result.self_supervised and result.improved
    assert result.psnr_after > result.psnr_before
    assert error(result.restorer) < error(restorer)
    card = result.restorer.card
    assert card.training["finetune"]["self_supervised"] is True
    assert "self-supervised" in card.description


def test_self_supervised_patches_halve_to_the_network_multiple() -> None:
    degraded, _ = _pair()
    result = finetune(_tiny(), [(degraded, None)], steps=1, patch_size=40, batch_size=2)
    assert result.restorer.card.training["finetune"]["patch_size"] == 32


def test_pairs_with_and_without_clean_images_are_refused() -> None:
    degraded, clean = _pair()
    with pytest.raises(InputError, match="some pairs have a clean image"):
        finetune(_tiny(), [(degraded, clean), (degraded, None)], steps=1, **FAST)


def test_a_stack_too_large_for_memory_trains_on_evenly_spaced_planes(monkeypatch) -> None:
    stack = np.stack([_pair(seed)[0] for seed in range(10)])
    monkeypatch.setattr(tuning, "MAX_VALUES", 3 * SIZE * SIZE)
    with pytest.warns(AllInOneWarning, match="on 3 of the 10 planes"):
        result = finetune(_tiny(), [(stack, None)], axes="ZYX", steps=1, **FAST)
    assert result.steps == 1
    layout = tuning.PlaneLayout.of(stack.shape, "ZYX")
    assert tuning._planes(layout, SIZE * SIZE, 1) == [(0,), (4,), (9,)]


def test_self_supervised_keeps_the_original_weights_unless_significantly_better(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A better mean by less than `SIGNIFICANCE` standard errors of the pixel-wise difference
    keeps the original weights; a clear gain keeps the adapted ones."""
    rng = np.random.default_rng(0)
    before = rng.exponential(1e-2, 4000)
    scatter = rng.normal(0, 1e-2, before.size)
    noisy_gain = before + scatter - scatter.mean() - 1e-5  # better on average, by 0.06 SE
    for after, kept in ((noisy_gain, False), (0.8 * before, True)):
        restorer = _tiny()
        monkeypatch.setattr(tuning, "_val_errors", _scored_by_weights(restorer, before, after))
        noisy = _pair()[0]
        result = finetune(restorer, [(noisy, None)], steps=4, **FAST)
        assert result.improved is kept
        assert _same(_state(result.restorer), _state(restorer)) is not kept
        if not kept:
            assert result.psnr_after == result.psnr_before


def _scored_by_weights(restorer: Restorer, original: np.ndarray, adapted: np.ndarray):
    """A stand-in for `_val_errors`: `original` for the original weights, else `adapted`."""
    start = _state(restorer)
    return lambda scorer, samples: original if _same(_state(scorer), start) else adapted


def test_a_gain_on_the_blind_spots_that_chose_it_must_hold_on_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The best weights are judged again on other blind spots (`_Best.confirm`): a gain seen
    only on the pixels that chose them keeps the original weights."""
    before = np.random.default_rng(0).exponential(1e-2, 4000)
    confirming: list[bool] = []
    confirm = tuning._Best.confirm

    def spy(best, scorer, samples) -> None:
        confirming.append(True)
        assert not np.any(samples[0].val_mask & first_masks[0])  # other pixels
        confirm(best, scorer, samples)

    first_masks: list[np.ndarray] = []

    def errors(scorer, samples) -> np.ndarray:
        first_masks.append(samples[0].val_mask)
        return before if confirming or len(first_masks) == 1 else 0.8 * before

    monkeypatch.setattr(tuning, "_val_errors", errors)
    monkeypatch.setattr(tuning._Best, "confirm", spy)
    restorer = _tiny()
    result = finetune(restorer, [(_pair()[0], None)], steps=4, **FAST)
    assert confirming and not result.improved and result.share == 0
    assert _same(_state(result.restorer), _state(restorer))


def test_self_supervised_adaptation_keeps_a_share_of_the_change_that_scores_better(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At its end, self-supervised adaptation validates weights part of the way from the original
    ones to the adapted ones (`SHARES`) and keeps the best-scoring of them: here half the way."""
    before = np.random.default_rng(0).exponential(1e-2, 4000)
    blends = iter([0.9, 0.5, 0.7])  # errors, as a part of the original's, at SHARES
    interpolate = tuning._Best.interpolate
    ends: list[dict] = []

    def record(best, scorer, samples) -> None:
        ends.append(best.state)
        interpolate(best, scorer, samples)

    calls: list[None] = []

    def errors(*args) -> np.ndarray:  # the original, then 20 % better adapted weights, then blends
        calls.append(None)
        if ends:
            return next(blends) * before
        return before if len(calls) == 1 else 0.8 * before

    monkeypatch.setattr(tuning, "_val_errors", errors)
    monkeypatch.setattr(tuning._Best, "interpolate", record)
    monkeypatch.setattr(tuning._Best, "confirm", lambda *args: None)  # tested above
    monkeypatch.setattr(tuning, "SHARES", (0.25, 0.5, 0.75))
    restorer = _tiny()
    result = finetune(restorer, [(_pair()[0], None)], steps=4, **FAST)
    assert result.improved and result.restorer.card.training["finetune"]["share"] == 0.5
    assert result.psnr_after == pytest.approx(10 * np.log10(1 / (0.5 * before.mean())))
    halfway = tuning._between(_state(restorer), ends[0], 0.5)
    assert _same(_state(result.restorer), halfway)


def test_self_supervised_adaptation_of_a_stack_trains_and_validates_on_every_plane() -> None:
    stack = np.random.default_rng(5).poisson(20.0, (5, 48, 64)).astype(np.uint16)
    samples = tuning._samples(
        [(stack, None)],
        "ZYX",
        None,
        0.2,
        RestoreOptions(),
        lambda view: None,
        np.random.default_rng(0),
    )
    assert len(samples) == 5
    for plane, sample in zip(stack, samples, strict=True):
        assert sample.train[1] is None and sample.val_mask is not None
        assert sample.train[0].shape[:2] == (48, plane.shape[1] - round(0.2 * 64))


def test_training_patches_are_lifted_as_restoring_lifts_them(monkeypatch) -> None:
    """On a dim plane beside bright squares the network learns on patches lifted by the local
    gain that restoring applies, their clean patches times the same gain."""
    from allinone.infer.local_gain import lift, plane_top
    from allinone.infer.normalize import fit_normalization

    rng = np.random.default_rng(5)
    clean = (200 + 100 * gaussian_filter(rng.standard_normal((96, 96)), 2)).clip(0, None)
    for y, x in ((8, 8), (8, 72), (72, 8), (72, 72)):
        clean[y : y + 16, x : x + 16] = 20_000
    degraded = (clean + rng.normal(0, 20, clean.shape)).clip(0).astype(np.uint16)
    clean = clean.astype(np.uint16)
    seen = []

    def record(net, optimizer, scaler, params, autocast, x, y, generator) -> float:
        seen.append((x.clone(), y.clone()))
        return 0.0

    monkeypatch.setattr(tuning, "_train_step", record)
    for local_gain in (True, False):
        options = RestoreOptions(scaling="percentile", local_gain=local_gain)
        finetune(_tiny(), [(degraded, clean)], steps=1, seed=3, options=options, **FAST)
    (lifted, lifted_clean), (plain, plain_clean) = seen
    top = plane_top(fit_normalization(degraded, "percentile"), rgb=False)
    assert top is not None
    expected, gain = lift(plain, top)
    assert float(gain.max()) > 2
    torch.testing.assert_close(lifted, expected)
    torch.testing.assert_close(lifted_clean, plain_clean * gain)
