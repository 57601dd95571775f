"""The restore chain and its options: each switch removes its own step and nothing else, and the
keyword arguments of `restore` are the options."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from allinone.errors import InputError
from allinone.infer.axes import PlaneLayout
from allinone.infer.chain import RestoreChain
from allinone.infer.clipping import Clipping
from allinone.infer.normalize import fit_normalization
from allinone.infer.options import RestoreOptions
from allinone.infer.pipeline import PlaneSource
from allinone.infer.tone import TONE_CHANGING, never_brighter, tone_kept


def _noisy(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(60_000, 4_000, shape), 0, 65_535).astype(np.uint16)


def _by_hand(restorer, image: np.ndarray, tone: bool, clipping: bool) -> np.ndarray:
    """One pass over a whole grey plane with percentile scaling, each step spelled out (the
    clipping correction at the noise level read over the plane)."""
    norm = fit_normalization(image, "percentile")
    height, width = image.shape
    x = torch.from_numpy(norm.forward(image))[None, None].expand(1, 3, -1, -1)
    x = F.pad(x, (0, -width % 8, 0, -height % 8), mode="reflect")
    plane = PlaneSource(PlaneLayout.of(image.shape), image, norm, noise=True)
    sigma = torch.tensor(plane.noise_level((), None)).view(1, 1, 1, 1)
    reading = Clipping(norm.clip_bounds(), sigma) if clipping else None
    restored, logits = restorer.tile_pass(x)
    if tone:
        restored = tone_kept(restored, logits, x, TONE_CHANGING, reading)
    restored = never_brighter(restored.float(), x, reading)
    return norm.inverse(restored[0, :, :height, :width].mean(dim=0).numpy())


@pytest.mark.parametrize("tone", [True, False])
@pytest.mark.parametrize("clipping", [True, False])
def test_each_switch_removes_its_step(
    random_restorer, monkeypatch, tone: bool, clipping: bool
) -> None:
    monkeypatch.setitem(random_restorer.__dict__, "reach", 0)  # no context, as by hand
    image = _noisy((36, 44))
    options = RestoreOptions(scaling="percentile", tone=tone, clipping=clipping, tile=0, overlap=0)
    restored = random_restorer.restore(image, options=options)
    np.testing.assert_array_equal(restored, _by_hand(random_restorer, image, tone, clipping))


def test_the_switches_change_the_result(random_restorer) -> None:
    image = _noisy((36, 44), seed=1)
    default = random_restorer.restore(image)
    for switch in ("tone", "clipping"):
        changed = random_restorer.restore(image, options=RestoreOptions(**{switch: False}))
        assert not np.array_equal(changed, default), switch


def test_the_keywords_of_restore_are_the_options(random_restorer) -> None:
    image = _noisy((3, 20, 30), seed=2)
    keywords = {"tile": 16, "overlap": 8, "scaling": "range", "ensemble": True}
    expected = random_restorer.restore(image, "ZYX", **keywords)
    given = random_restorer.restore(image, "ZYX", options=RestoreOptions(**keywords))
    np.testing.assert_array_equal(given, expected)
    np.testing.assert_array_equal(
        random_restorer.restore(image, "ZYX", options=RestoreOptions()),
        random_restorer.restore(image, "ZYX"),
    )


def test_a_keyword_beside_options_is_refused(tiny_restorer) -> None:
    with pytest.raises(TypeError, match="ensemble in options"):
        tiny_restorer.restore(np.zeros((8, 8)), ensemble=True, options=RestoreOptions())


def test_options_from_names_take_the_fields_and_ignore_the_rest() -> None:
    names = {"tone": False, "scene_haze": False, "tile": 0, "model": "tiny", "json": True}
    options = RestoreOptions.from_names(names)
    assert options == RestoreOptions(tone=False, scene_haze=False, tile=0)
    assert dataclasses.replace(options, tone=True).tone


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"scaling": "linear"}, "scaling"), ({"overlap": -1}, "overlap"), ({"tile": -2}, "tile")],
)
def test_bad_options_are_refused(fields: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        RestoreOptions(**fields)


@pytest.mark.parametrize(
    ("shape", "scene_haze", "judged"),
    [
        ((150, 140, 3), True, True),
        ((150, 140, 3), False, False),
        ((100, 120, 3), True, False),  # no larger than the overview
        ((150, 140), True, False),  # grey
    ],
)
def test_scene_haze_runs_on_large_colour_planes_when_asked(shape, scene_haze, judged) -> None:
    layout = PlaneLayout.of(shape, None)
    norm = fit_normalization(np.zeros(shape, np.uint8), "range")
    chain = RestoreChain(RestoreOptions(scene_haze=scene_haze), layout, norm)
    assert chain.scene is judged
    assert (chain.scene_hook(lambda x: (x, x)) is not None) is judged
