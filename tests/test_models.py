"""The networks: presets, output contract, NDR injection and query, DFPIR routing, locality."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_zero_init
from torch.utils._python_dispatch import TorchDispatchMode

from allinone.models import PRESETS, AllInOneNet, build_network
from allinone.models.dfpir import PerturbationBlock, top_fraction_mask
from allinone.models.heads import route_from_logits
from allinone.models.ndr import DegradationDictionary, DegradationInjection
from allinone.models.network import NetOutput
from allinone.types import DEGRADATIONS

T = len(DEGRADATIONS)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def check_output(net: AllInOneNet, shape: tuple[int, int, int, int]) -> None:
    b, _, h, w = shape
    x = torch.rand(shape, generator=torch.Generator().manual_seed(h + w))
    out = net(x)
    assert out.restored.shape == (b, 3, h, w)
    assert out.logits.shape == (b, T)
    assert out.pixel_logits.shape == (b, T, h // 8, w // 8)
    assert torch.allclose(out.logits, out.pixel_logits.mean(dim=(2, 3)))
    assert len(out.representation) == 3
    for level, weights in enumerate(out.representation):
        assert weights.shape == (b, net.preset.num_atoms, h >> level, w >> level)
        # softmax over the atoms
        assert torch.allclose(weights.sum(1), torch.ones(()), atol=1e-5)
    for tensor in (out.restored, out.pixel_logits):
        assert torch.isfinite(tensor).all()
    if net.preset.ndr:  # every preset: the bidirectional training's other direction
        redegraded = net.degrade(x, out.representation)
        assert redegraded.shape == x.shape and torch.isfinite(redegraded).all()
    net.zero_grad(set_to_none=True)
    (out.restored.square().mean() + out.logits.mean()).backward()
    for name, parameter in net.named_parameters():
        if name.startswith("degradation_net"):
            assert parameter.grad is None, name  # not used by the forward pass
        else:
            assert parameter.grad is not None, name
            assert torch.isfinite(parameter.grad).all(), name
    assert net.embed.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_preset_builds_runs_forward_and_backward(name: str) -> None:
    torch.manual_seed(0)
    net = build_network(name)
    assert net.preset is PRESETS[name]
    check_output(net, (1, 3, 32, 32))
    check_output(net, (2, 3, 64, 64))


def test_paper_preset_builds_runs_forward_and_backward() -> None:
    torch.manual_seed(0)
    net = build_network("paper")
    assert 15e6 < n_params(net) < 40e6
    check_output(net, (1, 3, 32, 32))


def test_preset_sizes() -> None:
    sizes = {name: n_params(build_network(name)) for name in ("tiny", "small", "base")}
    assert sizes["tiny"] < 500_000
    assert sizes["tiny"] < sizes["small"] < sizes["base"]
    assert set(PRESETS) == {"tiny", "small", "base", "paper"}


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge'.*tiny"):
        build_network("huge")


def test_preset_dict_round_trip() -> None:
    for preset in PRESETS.values():
        assert type(preset).from_dict(preset.to_dict()) == preset


def test_degradation_network_trains_the_atoms() -> None:
    """NDR's degradation direction: re-degrading the clean image uses the restoration
    network's representation, so its loss trains the shared dictionary and the queries."""
    torch.manual_seed(0)
    net = build_network("tiny")
    generator = torch.Generator().manual_seed(3)
    clean = torch.rand((2, 3, 32, 32), generator=generator)
    degraded = (clean + 0.1 * torch.randn(clean.shape, generator=generator)).clamp(0, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)

    def degradation_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = net(degraded)
        redegraded = net.degrade(clean, out.representation)
        assert redegraded.shape == clean.shape
        torch.nn.functional.l1_loss(redegraded, degraded).backward()

    degradation_step()
    # The injections start as the identity (zero modulation), so the first step only trains the
    # modulation; from then on the degradation loss reaches the atoms and the queries.
    for injection in net.degradation_net.inject:
        assert injection.modulation.weight.grad.abs().sum() > 0
    optimizer.step()
    degradation_step()
    assert net.dictionary.atoms.grad is not None
    assert net.dictionary.atoms.grad.abs().sum() > 0
    for query in net.queries:
        assert query.query.grad.abs().sum() > 0
    # the restoration decoder is not on the degradation path
    assert net.out.weight.grad is None


def test_degrade_needs_ndr() -> None:
    torch.manual_seed(0)
    net = build_network(dataclasses.replace(PRESETS["tiny"], ndr=False, dfpir=False))
    assert not hasattr(net, "injections") and not hasattr(net, "perturb")
    out = net(torch.rand(1, 3, 16, 16))
    assert out.restored.shape == (1, 3, 16, 16)
    with pytest.raises(RuntimeError, match="NDR"):
        net.degrade(torch.rand(1, 3, 16, 16), out.representation)
    assert "degradation_net" not in net.inference_modules()


def test_injection_is_the_identity_at_initialisation() -> None:
    torch.manual_seed(0)
    dictionary = DegradationDictionary(8, 16)
    injection = DegradationInjection(12, dictionary, rank=2)
    x = torch.randn(2, 12, 10, 14)
    weights = torch.randn(2, 8, 10, 14).softmax(dim=1)
    assert torch.equal(injection(x, weights), x)
    # ... and no longer once the modulation has learned something
    randomize_zero_init(injection)
    assert not torch.allclose(injection(x, weights), x)


def test_injections_and_perturbations_are_identities_inside_the_fresh_network() -> None:
    torch.manual_seed(0)
    net = build_network("tiny")
    seen = []

    def hook(module, inputs, output):
        seen.append(type(module).__name__)
        assert torch.equal(output, inputs[0])

    handles = [m.register_forward_hook(hook) for m in (*net.injections, *net.perturb)]
    net(torch.rand(1, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert seen.count("DegradationInjection") == 3
    assert seen.count("PerturbationBlock") == 4


class LargestOutput(TorchDispatchMode):
    """Record the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for tensor in result if isinstance(result, (tuple, list)) else [result]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return result


def test_injection_never_builds_a_rank_by_channel_by_pixel_tensor() -> None:
    torch.manual_seed(0)
    channels, rank, size = 32, 4, 256
    dictionary = DegradationDictionary(32, 128)
    injection = randomize_zero_init(DegradationInjection(channels, dictionary, rank=rank))
    x = torch.randn(1, channels, size, size)
    weights = torch.randn(1, 32, size, size).softmax(dim=1)
    with torch.no_grad(), LargestOutput() as probe:
        out = injection(x, weights)
    assert out.shape == x.shape
    pixels = size * size
    # the biggest intermediate is the modulation's (f, g) pair: 2 x C x H x W
    assert probe.largest <= 2 * channels * pixels
    assert probe.largest < rank * channels * pixels


@pytest.mark.parametrize("n", [1, 2, 5, 8, 10, 16, 31, 64])
def test_top_fraction_mask_keeps_the_largest_ceil_09_n(n: int) -> None:
    logits = torch.randn(3, 4, n, n, generator=torch.Generator().manual_seed(n))  # no ties
    masked = top_fraction_mask(logits, 0.9)
    kept = torch.isfinite(masked)
    k = math.ceil(0.9 * n)
    assert (kept.sum(-1) == k).all()
    assert torch.equal(masked[kept], logits[kept])
    # every kept logit is at least as large as every dropped one in its row
    smallest_kept = logits.masked_fill(~kept, float("inf")).amin(-1)
    largest_dropped = logits.masked_fill(kept, float("-inf")).amax(-1)
    assert (smallest_kept > largest_dropped).all()
    assert torch.isfinite(masked.softmax(-1)).all()


def test_top_fraction_mask_keeps_ties_at_the_threshold() -> None:
    # Zero-initialised logits are all tied: all are kept (uniform attention, as documented by
    # the comparison with the k-th largest value), never fewer than ceil(keep * n).
    masked = top_fraction_mask(torch.zeros(2, 10), 0.9)
    assert torch.isfinite(masked).all()


def test_route_sums_to_one_per_pixel() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, T, 4, 6, generator=generator) * 5
    logits[0, :, 0, 0] = 50.0  # everything certain: the types share the whole mass
    logits[0, :, 0, 1] = -50.0  # nothing: all goes to "clean"
    route = route_from_logits(logits, (16, 24))
    assert route.shape == (2, T + 1, 16, 24)
    assert route.min() > -1e-6 and route.max() < 1 + 1e-6
    assert torch.allclose(route.sum(1), torch.ones(()), atol=1e-6)
    assert route[0, 0, 0, 0] == pytest.approx(0.0, abs=1e-6)
    assert route[0, 0, 0, 4] == pytest.approx(1.0, abs=1e-6)
    # nearest upsampling: each 4x4 block repeats one cell
    assert torch.equal(route[:, :, :4, :4], route[:, :, :1, :1].expand(-1, -1, 4, 4))


def test_perturbation_routes_per_pixel() -> None:
    torch.manual_seed(0)
    block = randomize_zero_init(PerturbationBlock(16, T, heads=2))
    x = torch.randn(1, 16, 8, 8)
    clean_route = torch.zeros(1, T + 1, 8, 8)
    clean_route[:, 0] = 1
    noisy_route = clean_route.clone()
    noisy_route[:, :, :, 4:] = 0
    noisy_route[:, 1, :, 4:] = 1
    a, b = block(x, clean_route), block(x, noisy_route)
    assert torch.equal(a[..., :4], b[..., :4])  # same route, same pixels: same output
    assert not torch.allclose(a[..., 4:], b[..., 4:])


def test_tiny_network_is_local() -> None:
    """A change to one pixel leaves everything far away unchanged: no global pooling."""
    torch.manual_seed(0)
    net = randomize_zero_init(build_network("tiny")).eval()
    x = torch.rand(1, 3, 512, 64, generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[0, :, 256, 32] = 1.0 - changed[0, :, 256, 32]
    with torch.no_grad():
        a, b = net(x), net(changed)
    diff = (a.restored - b.restored).abs().amax(dim=(0, 1, 3))
    assert diff[250:262].max() > 1e-4  # the change does propagate locally
    assert torch.equal(a.restored[..., :56, :], b.restored[..., :56, :])
    assert torch.equal(a.restored[..., 457:, :], b.restored[..., 457:, :])
    far = torch.cat([diff[:56], diff[457:]])
    assert far.max() == 0
    cells = (a.pixel_logits - b.pixel_logits).abs().amax(dim=(0, 1, 3))
    assert cells[:7].max() == 0 and cells[58:].max() == 0


def test_the_reach_is_how_far_outputs_look() -> None:
    net = build_network("tiny").eval()
    assert net.reach() <= 8  # fresh blocks are identities: little more than two convolutions

    def box(x: torch.Tensor) -> NetOutput:
        smooth = F.avg_pool2d(x, 41, stride=1, padding=20, count_include_pad=False)
        return NetOutput(smooth, torch.zeros(x.shape[0], len(DEGRADATIONS), 1, 1), [])

    net.forward = box
    assert net.reach() == 24  # 20 pixels, in multiples of 8


def test_channels_last_fast_paths_match_the_plain_layers() -> None:
    from allinone.models.blocks import LayerNorm2d, PointwiseConv

    torch.manual_seed(0)
    x = torch.randn(2, 12, 9, 7)
    fast = x.contiguous(memory_format=torch.channels_last)
    conv = PointwiseConv(12, 20)
    norm = LayerNorm2d(12)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    for layer in (conv, norm):
        expected = layer(x)
        got = layer(fast)
        assert got.shape == expected.shape
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert isinstance(conv, torch.nn.Conv2d) and conv.weight.shape == (20, 12, 1, 1)
