"""The restore chain: every step between a plane's normalised input and its restored tiles,
built from `RestoreOptions`, in order.

1. Scene haze (`scene_haze`; colour planes larger than the overview): the network restores a
   small overview of the plane, and the haze it removes there is taken off every tile's input
   (`allinone.infer.scene`).
2. The network on each tile, or on each of its eight flips and rotations, mapped back and
   averaged (`ensemble`; `allinone.infer.ensemble`); on grey planes that keep their exposure,
   each pass sees dim regions lifted by a local gain and returns them divided by it
   (`local_gain`; `allinone.infer.local_gain`); each pass is followed by
3. tone keeping (`tone`): the output follows its input's local mean unless the pass sees haze
   (where step 1 does not judge it), rain or low light (`allinone.infer.tone`);
4. the clipping correction (`clipping`): those local means of the input taken back through
   noise clipped at an integer dtype's ends, at the noise level of the tile's whole plane
   (`PlaneSource.noise_level`, `allinone.infer.clipping`), so that every tile allows alike;
5. never brighter, where the normalisation keeps the exposure (``"percentile"`` scaling, and
   ``"auto"``): the smooth excess of the output's local mean over the input's taken off.

Restoring (`Restorer.restore_steps`, `restore_dask`) and fine-tune validation
(`allinone.train.finetune`) both run these steps, so validation scores what restore outputs.
The network passes come from the caller (`Restorer.tile_pass`, `Restorer.overview_pass`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from allinone.infer.axes import PlaneLayout
from allinone.infer.clipping import Bounds, Clipping
from allinone.infer.ensemble import self_ensemble
from allinone.infer.local_gain import gained_pass, plane_top
from allinone.infer.normalize import Normalization
from allinone.infer.options import RestoreOptions
from allinone.infer.pipeline import Forward, PlaneSource, SceneHook
from allinone.infer.scene import NetworkPass, Overview, has_overview, plane_overview, scene_tone
from allinone.infer.tone import never_brighter, tile_tone_changing, tone_kept

__all__ = ["RestoreChain", "scene_judged"]


def scene_judged(layout: PlaneLayout) -> bool:
    """Whether haze in `layout`'s planes can be judged on an overview (`allinone.infer.scene`):
    colour planes larger than it."""
    return layout.rgb and has_overview(layout.plane_shape)


@dataclass(frozen=True)
class RestoreChain:
    """The steps that restore the planes of one layout under one normalisation (see the module
    docstring)."""

    options: RestoreOptions
    layout: PlaneLayout
    norm: Normalization

    @property
    def scene(self) -> bool:
        """Whether step 1 runs: scene haze asked for, on planes where it can be judged."""
        return self.options.scene_haze and scene_judged(self.layout)

    @property
    def gain_top(self) -> float | None:
        """The largest gain step 2 lifts dim regions by: asked for, on planes that are lifted
        (`local_gain.plane_top`); None where it does not run."""
        if not self.options.local_gain:
            return None
        return plane_top(self.norm, self.layout.rgb)

    def overview(self, source: PlaneSource, index: tuple[int, ...], fill) -> Overview | None:
        """The overview step 1 restores for plane `index` of `source` (non-finite values
        `fill`ed); only where `scene` is true."""
        return plane_overview(source.input_chunks(index, fill), self.layout.plane_shape, self.norm)

    def scene_hook(self, overview_pass: NetworkPass) -> SceneHook | None:
        """Step 1 for every plane of a `PlaneSource`, with `overview_pass`; None where it does
        not run."""
        if not self.scene:
            return None

        def hook(source: PlaneSource, index: tuple[int, ...], fill):
            chunks = source.input_chunks(index, fill)
            return scene_tone(overview_pass, chunks, self.layout.plane_shape, self.norm)

        return hook

    def tile_steps(self, tile_pass: NetworkPass, trim: int = 0) -> Forward:
        """Steps 2 to 5 as one function of a batch of (B, 3, h, w) network-input tiles (step 1
        already applied to them) and their planes' noise levels (None: read from the tiles),
        with `tile_pass` running the network. The outputs lack `trim` pixels on every side:
        context that the tone guards need not see (`allinone.infer.tone.GUARD_REACH`)."""
        options, norm = self.options, self.norm
        bounds = norm.clip_bounds() if options.clipping else None
        changing = tile_tone_changing(self.scene)
        top = self.gain_top
        network = tile_pass if top is None else gained_pass(tile_pass, top)

        def one_pass(x: torch.Tensor, clipping: Clipping | None) -> torch.Tensor:
            restored, logits = network(x)
            size = (x.shape[-2] - 2 * trim, x.shape[-1] - 2 * trim)
            restored, x = centre(restored, size), centre(x, size)
            if not options.tone:
                return restored.float()
            return tone_kept(restored, logits, x, changing, clipping)

        def forward(x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
            clipping = _clipping(x, bounds, noise)
            with torch.inference_mode():
                passes = functools.partial(one_pass, clipping=clipping)
                restored = self_ensemble(passes, x) if options.ensemble else passes(x)
                if not norm.keep_exposure:
                    return restored
                return never_brighter(
                    restored, centre(x, (restored.shape[-2], restored.shape[-1])), clipping
                )

        return forward


def _clipping(
    x: torch.Tensor, bounds: Bounds | None, noise: torch.Tensor | None
) -> Clipping | None:
    """The clipping of tiles `x` at `bounds` (None: no correction), under the noise levels of
    their planes, or read from the tiles themselves where those are None."""
    if bounds is None:
        return None
    return Clipping.read(x, bounds) if noise is None else Clipping(bounds, noise)


def centre(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The central `size` (height, width) of (..., H, W) `x`."""
    top, left = (x.shape[-2] - size[0]) // 2, (x.shape[-1] - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]
