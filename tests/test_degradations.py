"""Statistical tests of the degradation operators and the training sampler."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

from allinone.degradations import (
    ORDER,
    add_background_haze,
    add_haze,
    add_rain,
    apply,
    apply_kernel,
    defocus_kernel,
    gaussian_kernel,
    gaussian_noise,
    line_kernel,
    low_light,
    low_resolution,
    mix,
    motion_kernel,
    poisson_gaussian_noise,
    synthesize,
    to_8_bits,
)
from allinone.types import DEGRADATIONS


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def image(b: int = 2, c: int = 3, size: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand((b, c, size, size), generator=gen(seed))


def laplacian_energy(x: torch.Tensor) -> torch.Tensor:
    """Mean squared 4-neighbour Laplacian per sample (high-frequency energy)."""
    inner = x[..., 1:-1, 1:-1]
    lap = x[..., :-2, 1:-1] + x[..., 2:, 1:-1] + x[..., 1:-1, :-2] + x[..., 1:-1, 2:] - 4 * inner
    return lap.pow(2).mean(dim=(1, 2, 3))


def gradient_energy(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean squared horizontal and vertical finite differences per sample."""
    gx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=(1, 2, 3))
    gy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(1, 2, 3))
    return gx, gy


def is_decreasing(values: list[float]) -> bool:
    return all(a > b for a, b in pairwise(values))


# --- noise -------------------------------------------------------------------------------------


def test_gaussian_noise_std_matches_sigma_per_sample():
    sigma = torch.tensor([5.0, 15.0, 25.0, 40.0]) / 255
    x = torch.full((4, 1, 128, 128), 0.5)
    y = gaussian_noise(x, sigma, gen())
    measured = (y - x).std(dim=(1, 2, 3))
    torch.testing.assert_close(measured, sigma, rtol=0.03, atol=0)
    assert (y - x).mean().abs() < 2e-3


def test_poisson_gaussian_variance_at_two_intensities():
    photons, read = 100.0, 0.02
    levels = torch.tensor([0.2, 0.6])
    x = levels.view(2, 1, 1, 1).expand(2, 1, 128, 128).contiguous()
    y = poisson_gaussian_noise(x, photons, read, gen())
    expected = levels / photons + read**2
    torch.testing.assert_close(y.var(dim=(1, 2, 3)), expected, rtol=0.06, atol=0)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), levels, rtol=0, atol=3e-3)


# --- blur --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kernels",
    [
        lambda: gaussian_kernel(torch.tensor([0.8, 1.5, 3.0])),
        lambda: defocus_kernel(torch.tensor([1.0, 2.0, 6.0])),
        lambda: motion_kernel(torch.tensor([5.0, 15.0, 25.0]), gen()),
    ],
    ids=["gaussian", "defocus", "motion"],
)
def test_blur_kernels_are_normalised_and_remove_high_frequencies(kernels):
    k = kernels()
    assert k.ndim == 3 and k.shape[0] == 3 and k.shape[-1] % 2 == 1
    assert (k >= 0).all()
    torch.testing.assert_close(k.sum(dim=(-2, -1)), torch.ones(3))
    x = image(b=3)
    y = apply_kernel(x, k)
    assert y.shape == x.shape
    energy = laplacian_energy(y) / laplacian_energy(x)
    assert (energy < 0.5).all()
    assert is_decreasing(energy.tolist())


def test_motion_kernels_depend_on_seed_and_spread_with_length():
    a = motion_kernel(15.0, gen(0), size=21)
    b = motion_kernel(15.0, gen(1), size=21)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, motion_kernel(15.0, gen(0), size=21))
    k = motion_kernel(torch.tensor([4.0, 12.0, 24.0]), gen(2))
    gx, gy = torch.meshgrid(torch.arange(k.shape[-1]), torch.arange(k.shape[-1]), indexing="xy")
    spread = []
    for kk in k:
        mx, my = (kk * gx).sum(), (kk * gy).sum()
        spread.append((kk * ((gx - mx) ** 2 + (gy - my) ** 2)).sum().item())
    assert spread[0] < spread[1] < spread[2]


def test_apply_kernel_convolves_and_keeps_identity():
    x = image(b=2, c=1, size=16)
    delta = torch.zeros(3, 3)
    delta[1, 1] = 1
    torch.testing.assert_close(apply_kernel(x, delta), x)
    shift = torch.zeros(3, 3)
    shift[1, 2] = 1  # convolution with a delta right of centre moves the image right
    torch.testing.assert_close(apply_kernel(x, shift)[..., 1:], x[..., :-1])
    with pytest.raises(ValueError):
        apply_kernel(x, torch.ones(4, 4) / 16)


# --- haze --------------------------------------------------------------------------------------


def test_haze_lowers_contrast_and_lifts_dark_images_monotonically():
    x = image()
    dark = torch.full_like(x, 0.05)
    betas = [0.2, 0.8, 1.6, 3.0]
    stds = [add_haze(x, beta, gen()).std().item() for beta in betas]
    means = [add_haze(dark, beta, gen()).mean().item() for beta in betas]
    assert stds[0] < x.std().item()
    assert is_decreasing(stds)
    assert is_decreasing([-m for m in means]) and means[0] > 0.05


def test_haze_severity_spans_transmission_range():
    x = torch.zeros(2, 3, 64, 64)
    # On a black scene the output is A (1 - t): mean transmission 0.9 -> 0.2, A in [0.65, 1].
    light = apply(x, "haze", 0.0, gen()).mean().item()
    heavy = apply(x, "haze", 1.0, gen()).mean().item()
    assert 0.03 < light < 0.12 and heavy > 0.5


def test_background_haze_lifts_and_flattens():
    x = image(c=1)
    y = add_background_haze(x, torch.tensor([0.2, 0.6]), gen())
    assert (y >= x - 1e-6).all()
    stds = y.std(dim=(1, 2, 3))
    assert (stds < x.std(dim=(1, 2, 3))).all() and stds[1] < stds[0]


# --- rain --------------------------------------------------------------------------------------


def test_line_kernel_orientation():
    vertical = line_kernel(9.0, 0.0, size=11)[0]
    assert vertical[:, 5].sum() == pytest.approx(9, abs=0.6) and vertical[5].sum() < 1.5
    horizontal = line_kernel(9.0, 90.0, size=11)[0]
    torch.testing.assert_close(horizontal, vertical.T, atol=1e-5, rtol=0)


def test_rain_adds_bright_streaks_oriented_along_the_angle():
    x = torch.full((3, 1, 96, 96), 0.3)
    y = add_rain(x, 0.005, 20.0, torch.tensor([0.0, 90.0, 45.0]), 0.8, gen())
    assert (y >= x).all()
    assert (y.mean(dim=(1, 2, 3)) > 0.32).all()
    gx, gy = gradient_energy(y)
    assert gx[0] > 4 * gy[0]  # vertical streaks: intensity changes across columns
    assert gy[1] > 4 * gx[1]  # horizontal streaks
    assert 0.5 < gx[2] / gy[2] < 2


def test_rain_mean_grows_with_severity():
    x = image()
    gains = [(apply(x, "rain", s, gen()) - x).mean().item() for s in (0.0, 0.5, 1.0)]
    assert 0 < gains[0] < gains[1] < gains[2]


# --- low light and resolution ------------------------------------------------------------------


def test_low_light_darkens_substantially():
    x = image()
    y = low_light(x, 2.0, 0.5, gen())
    assert y.mean() < 0.5 * x.mean()
    severities = (0.0, 0.5, 1.0)
    means = [apply(x, "low_light", s, gen()).mean().item() for s in severities]
    for severity, mean in zip(severities, means, strict=True):
        assert mean < (0.6 - 0.45 * severity) * x.mean().item() + 0.01
    assert is_decreasing(means)


def test_some_low_light_samples_carry_no_noise():
    flat = torch.full((64, 3, 32, 32), 0.8)
    dark = apply(flat, "low_light", 0.5, gen())
    noiseless = dark.flatten(1).std(dim=1) == 0
    assert 0.15 < noiseless.float().mean().item() < 0.55
    levels = dark[noiseless] * 255
    torch.testing.assert_close(levels, levels.round())
    assert (dark[noiseless] < 0.8 * 0.375).all() and (dark[noiseless] > 0).all()


def test_low_resolution_removes_high_frequencies_monotonically():
    x = image(b=3)
    y = low_resolution(x, torch.tensor([2.0, 3.0, 4.0]))
    assert y.shape == x.shape and y.dtype == x.dtype
    energy = laplacian_energy(y) / laplacian_energy(x)
    assert energy[0] < 0.5 and is_decreasing(energy.tolist())
    torch.testing.assert_close(y[1:2], low_resolution(x[1:2], 3))


# --- the sampler -------------------------------------------------------------------------------


def test_synthesize_is_deterministic_and_preserves_the_batch():
    x = image(b=6, size=32).double()
    a = synthesize(x, gen(3), mix_probability=0.5)
    b = synthesize(x, gen(3), mix_probability=0.5)
    c = synthesize(x, gen(4), mix_probability=0.5)
    assert torch.equal(a.degraded, b.degraded) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.degraded, c.degraded)
    assert a.degraded.shape == x.shape and a.degraded.dtype == x.dtype
    assert a.degraded.device == x.device
    assert a.labels.shape == a.severities.shape == (6, len(DEGRADATIONS))
    assert a.degraded.min() >= 0 and a.degraded.max() <= 1
    assert set(a.labels.unique().tolist()) <= {0.0, 1.0}
    assert ((a.severities > 0) <= (a.labels > 0)).all()
    assert (a.severities >= 0).all() and (a.severities <= 1).all()


def test_labels_record_the_types_applied_in_physical_order(monkeypatch):
    """Replace each operator with x -> 10 x + (its rank in ORDER + 1), so the decimal digits of
    a zero image after synthesis spell the sequence of operators applied."""

    def marker(rank: int):
        return lambda x, s, g, microscopy: 10 * x + rank + 1

    fakes = {name: marker(rank) for rank, name in enumerate(ORDER)}
    monkeypatch.setattr(mix, "_APPLY", fakes)
    out = synthesize(torch.zeros(64, 1, 2, 2, dtype=torch.float64), gen(), mix_probability=0.5)
    for code, labels in zip(out.degraded[:, 0, 0, 0].tolist(), out.labels.tolist(), strict=True):
        applied = [ORDER[int(d) - 1] for d in str(int(code))] if code else []
        expected = [name for name in ORDER if labels[DEGRADATIONS.index(name)]]
        assert applied == expected
    counts = out.labels.sum(dim=1)
    assert counts.max() <= 3 and (counts == 1).any() and (counts >= 2).any()


def test_mixing_counts_follow_the_probabilities():
    x = torch.zeros(64, 1, 2, 2)
    single = synthesize(x, gen(), mix_probability=0.0, clean_probability=0.0, types=["noise"])
    assert (single.labels.sum(dim=1) == 1).all()
    mixed = synthesize(x, gen(), mix_probability=1.0, max_mixed=2, clean_probability=0.0)
    assert (mixed.labels.sum(dim=1) == 2).all()


def test_type_weights_set_how_often_each_type_is_drawn():
    x = torch.zeros(4000, 1, 2, 2)
    plain = synthesize(x, gen(), mix_probability=0.0, clean_probability=0.0)
    weighted = synthesize(
        x, gen(), mix_probability=0.0, clean_probability=0.0, weights={"blur": 5.0}
    )
    blur = DEGRADATIONS.index("blur")
    assert abs(plain.labels[:, blur].mean().item() - 1 / 6) < 0.03
    assert abs(weighted.labels[:, blur].mean().item() - 0.5) < 0.03
    assert (weighted.labels.sum(dim=1) == 1).all()


def test_equal_type_weights_draw_as_no_weights():
    x = image(b=8, size=16)
    plain = synthesize(x, gen(9), mix_probability=0.5)
    equal = synthesize(x, gen(9), mix_probability=0.5, weights=dict.fromkeys(DEGRADATIONS, 2.0))
    assert torch.equal(plain.labels, equal.labels)
    assert torch.equal(plain.degraded, equal.degraded)


@pytest.mark.parametrize("weights", [{"smog": 1.0}, {"blur": 0.0}])
def test_bad_type_weights_are_refused(weights):
    with pytest.raises(ValueError):
        synthesize(image(b=2, size=8), gen(), weights=weights)


def test_clean_probability_one_returns_the_input():
    x = image(size=16)
    out = synthesize(x, gen(), clean_probability=1.0)
    assert torch.equal(out.degraded, x)
    assert not out.labels.any() and not out.severities.any()


def test_types_restrict_the_choice():
    x = image(b=4, size=32)
    out = synthesize(x, gen(), types=["haze"], clean_probability=0.0)
    haze = DEGRADATIONS.index("haze")
    assert (out.labels[:, haze] == 1).all() and out.labels.sum() == 4
    assert not torch.equal(out.degraded, x)
    with pytest.raises(ValueError):
        synthesize(x, gen(), types=["fog"])


def test_microscopy_is_never_rained_on_or_darkened():
    x = image(b=48, c=1, size=16)
    out = synthesize(x, gen(), microscopy=True, mix_probability=0.7)
    used = [DEGRADATIONS.index(n) for n in ("noise", "blur", "haze", "downsample")]
    assert not out.labels[:, DEGRADATIONS.index("rain")].any()
    assert not out.labels[:, DEGRADATIONS.index("low_light")].any()
    assert out.labels.sum(dim=0)[used].gt(0).all()
    for name in ("rain", "low_light"):
        with pytest.raises(ValueError):
            synthesize(x, gen(), types=[name], microscopy=True)


@pytest.mark.parametrize("microscopy", [False, True])
@pytest.mark.parametrize("name", DEGRADATIONS)
def test_apply_changes_the_image_within_range(name, microscopy):
    x = image(b=2, size=32)
    y = apply(x, name, torch.tensor([0.0, 1.0]), gen(), microscopy=microscopy)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1
    change = (y - x).abs().mean(dim=(1, 2, 3))
    assert (change > 1e-3).all()
    torch.testing.assert_close(y, apply(x, name, torch.tensor([0.0, 1.0]), gen(), microscopy))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_synthesize_on_gpu_matches_device_and_is_deterministic():
    x = image(b=4, size=32).cuda()
    a = synthesize(x, gen(5, "cuda"), mix_probability=0.5)
    b = synthesize(x, gen(5, "cuda"), mix_probability=0.5)
    assert a.degraded.device == x.device and a.labels.device == x.device
    assert torch.equal(a.degraded, b.degraded)
    c = synthesize(x, gen(5), mix_probability=0.5)  # a CPU generator drives a GPU batch
    assert c.degraded.device == x.device


def test_to_8_bits_clips_and_rounds_to_the_256_levels() -> None:
    x = torch.tensor([-0.2, 0.0, 0.31, 100.4 / 255, 100.6 / 255, 1.0, 1.7])
    levels = to_8_bits(x) * 255
    assert levels.tolist() == pytest.approx([0, 0, 79, 100, 101, 255, 255])
