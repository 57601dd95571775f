"""The switches of a restore: which steps of the restore chain run (`allinone.infer.chain`) and
how planes are tiled. No heavy imports here: the napari plugin holds these at start-up."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from allinone.errors import InputError
from allinone.infer.normalize import check_scaling


def check_tiling(tile: int | None, overlap: int) -> None:
    """Refuse a negative tile size or overlap."""
    if overlap < 0:
        raise InputError(f"overlap must be >= 0, got {overlap}")
    if tile is not None and tile < 0:
        raise InputError(f"tile must be >= 0 (0 = whole image), got {tile}")


@dataclass(frozen=True)
class RestoreOptions:
    """How an image is restored. The defaults are what `Restorer.restore` does unasked; each
    boolean switches one step of the chain on or off (`allinone.infer.chain`)."""

    scaling: str = "auto"
    """How intensities reach the network (`fit_normalization`): ``"percentile"`` keeps the
    exposure (the result is never brighter than the input, locally), ``"range"`` lets the model
    correct it, ``"auto"`` keeps it after undoing the darkening of an 8-bit colour photo that the
    exposure estimator reads as under-exposed (`allinone.infer.auto_exposure`)."""
    tone: bool = True
    """Tone keeping: each tile's output follows its input's local mean unless the network sees
    haze, rain or low light in it (`allinone.infer.tone`)."""
    clipping: bool = True
    """Clipping correction: the input's local means, where noise was clipped at an integer
    dtype's ends, are taken back to the unclipped ones (`allinone.infer.clipping`), for tone
    keeping and for the never-brighter guard of ``"percentile"`` scaling."""
    scene_haze: bool = True
    """Scene haze: haze judged on a small overview of each colour plane larger than it is removed
    first (`allinone.infer.scene`); the tiles alone miss it in large images."""
    local_gain: bool = True
    """Local gain: on grey planes whose exposure is kept, dim regions far from any bright
    structure reach the network lifted towards its training exposure, and come back divided by
    the same gain (`allinone.infer.local_gain`): a few very bright objects no longer leave the
    rest of the plane too dim for the network to read its noise."""
    ensemble: bool = False
    """The 8-view ensemble: every tile restored in its eight flips and rotations, averaged
    (`allinone.infer.ensemble`): better, 8x slower."""
    float_output: bool = False
    """Float32 results for integer images: the restoration clipped to the input dtype's range
    but not rounded to it. Rounding costs detail where the signal spans few levels of the dtype
    (a 12-bit camera's dim plane, a low-gain detector); off, the input's dtype is kept."""
    tile: int | None = None
    """Tile size in pixels: None picks one for the device's memory, 0 restores each plane in one
    pass."""
    overlap: int = 32
    """Pixels of context each tile reads around its core."""

    def __post_init__(self) -> None:
        check_scaling(self.scaling)
        check_tiling(self.tile, self.overlap)

    def output_dtype(self, dtype: np.dtype) -> np.dtype:
        """The dtype a restore of `dtype` data returns: float32 for an integer `dtype` with
        `float_output`, else `dtype` itself."""
        dtype = np.dtype(dtype)
        if self.float_output and np.issubdtype(dtype, np.integer):
            return np.dtype(np.float32)
        return dtype

    def changed(self) -> dict[str, Any]:
        """The fields away from their defaults, by name, in the fields' order."""
        defaults = RestoreOptions()
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(defaults, field.name)
        }

    @classmethod
    def from_names(cls, values: Mapping[str, Any]) -> RestoreOptions:
        """The options named among `values`, other keys ignored: e.g. ``vars(args)`` of an
        argparse namespace whose ``--no-tone``-style flags store into these field names."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in values.items() if name in names})

    @classmethod
    def given(cls, options: RestoreOptions | None, **keywords: Any) -> RestoreOptions:
        """`options`, or, without it, the options of `keywords` (field names); a keyword away
        from its default beside `options` is refused, since one of the two would be ignored."""
        if options is None:
            return cls(**keywords)
        defaults = cls()
        clashing = [name for name, value in keywords.items() if value != getattr(defaults, name)]
        if clashing:
            raise TypeError(f"give {', '.join(clashing)} in options, not beside it")
        return options
