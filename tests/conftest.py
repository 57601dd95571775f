"""Shared fixtures for the engine tests: small seeded networks and Restorers on the CPU."""

from __future__ import annotations

import os

# One intra-op thread: the tests use tiny tensors, for which a second OpenMP thread only adds
# synchronisation; on a shared, busy machine two spinning threads slow every op down a hundredfold.
# Set before torch is first imported (here or in a subprocess, which inherits it); an explicit
# OMP_NUM_THREADS from the caller wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


def tiny_training_config():
    """A four-step training run of the tiny preset on 32-pixel patches, validating and
    checkpointing every two steps (the training tests' shared starting point)."""
    from allinone.train.loop import TrainConfig

    return TrainConfig(
        preset="tiny",
        steps=4,
        batch_size=2,
        patch_size=32,
        validation_images=2,
        validate_every=2,
        checkpoint_every=2,
        warmup_steps=1,
        degrade_warmup=1,
    )


def randomize_zero_init(net, scale: float = 0.1, seed: int = 1):
    """Give every all-zero parameter (NAF beta/gamma, injection modulation, perturbation
    projection, attention logits) small seeded random values, so the network is far from its
    near-identity initialisation; returns `net`."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            if not torch.count_nonzero(parameter):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return net


def identity_net():
    """A tiny network whose output is exactly its input (the final convolution is zeroed)."""
    import torch

    from allinone.models import build_network

    torch.manual_seed(0)
    net = build_network("tiny")
    with torch.no_grad():
        net.out.weight.zero_()
        net.out.bias.zero_()
    return net


def smoothing_forward(x):
    """A network forward that smooths its input (a 9-pixel box) and reads noise alone."""
    import torch
    import torch.nn.functional as F

    from allinone.models.network import NetOutput
    from allinone.types import DEGRADATIONS

    logits = torch.tensor([[10.0 if n == "noise" else -10.0 for n in DEGRADATIONS]] * x.shape[0])
    smooth = F.avg_pool2d(x, 9, stride=1, padding=4, count_include_pad=False)
    return NetOutput(smooth, logits[:, :, None, None].expand(-1, -1, 2, 2), [])


def stand_in(monkeypatch, restorer, function) -> None:
    """`restorer`'s tile pass replaced by `tone_free_pass(function)`, with local gain off: a
    stand-in with an offset, unlike a network, does not scale with its input
    (`allinone.infer.local_gain`)."""
    from allinone.infer.chain import RestoreChain

    monkeypatch.setattr(RestoreChain, "gain_top", property(lambda chain: None))
    monkeypatch.setattr(restorer, "tile_pass", tone_free_pass(function))


def tone_free_pass(function):
    """A stand-in for `Restorer.tile_pass`: `function` of the tiles, with composition logits
    sure of low light, so that tone keeping hands its output on unchanged."""

    def tile_pass(x):
        import torch

        from allinone.types import DEGRADATIONS

        restored = function(x)
        logits = torch.full((x.shape[0], len(DEGRADATIONS)), -50.0, device=x.device)
        logits[:, DEGRADATIONS.index("low_light")] = 50.0
        return restored, logits

    return tile_pass


def make_restorer(net, name: str = "test"):
    """A CPU Restorer around `net`, with a card that matches it."""
    from allinone.infer.restorer import Restorer
    from allinone.weights import ModelCard

    card = ModelCard(name=name, preset=net.preset.to_dict(), training={"steps": 0})
    return Restorer(net, card, device="cpu")


@pytest.fixture(scope="session")
def tiny_restorer():
    """The `tiny` preset (seeded, untrained) on the CPU; tests must not modify it."""
    from allinone.infer.restorer import Restorer

    return Restorer.from_pretrained("tiny", device="cpu")


@pytest.fixture(scope="session")
def random_restorer():
    """A `tiny` network with its zero-initialised parameters randomised: far from the identity."""
    import torch

    from allinone.models import build_network

    torch.manual_seed(0)
    return make_restorer(randomize_zero_init(build_network("tiny")), "tiny-randomised")


@pytest.fixture(scope="session")
def identity_restorer():
    """A Restorer whose network returns its input unchanged."""
    return make_restorer(identity_net(), "identity")


def _haze_pass(logit: float, airlight: float = 0.1):
    """A stand-in scene-scale overview pass: takes `airlight` off and gives haze `logit`."""
    import torch

    from allinone.types import DEGRADATIONS

    def overview_pass(x):
        logits = torch.full((1, len(DEGRADATIONS)), -50.0)
        logits[0, DEGRADATIONS.index("haze")] = logit
        return x - airlight, logits

    return overview_pass


@pytest.fixture
def haze_pass():
    """`haze_pass(logit, airlight=0.1)`: a stand-in overview pass (see `_haze_pass`)."""
    return _haze_pass


@pytest.fixture
def sure_of_haze(monkeypatch):
    """Every Restorer's scene-scale overview pass takes 0.1 off and is sure of haze."""
    from allinone.infer.restorer import Restorer

    overview_pass = _haze_pass(50.0)
    monkeypatch.setattr(Restorer, "overview_pass", lambda self, x: overview_pass(x))


# --- napari -------------------------------------------------------------------------------------

PLUGIN = "napari-allinone"


@pytest.fixture
def notifications():
    """(severity, message) of every napari notification shown during the test: 'error',
    'warning' or 'info'."""
    from napari.utils.notifications import notification_manager

    shown: list[tuple[str, str]] = []

    def keep(notification) -> None:
        shown.append((str(notification.severity), str(notification.message)))

    notification_manager.notification_ready.connect(keep)
    yield shown
    notification_manager.notification_ready.disconnect(keep)


def open_widget(viewer, name: str):
    """Open one of the plugin's dock widgets through the manifest, set to `tiny` on the CPU."""
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name)
    assert widget.engine.model.select("tiny")
    widget.engine.set_device("cpu")
    return widget
