"""The tone curve of an under-exposure, and its inverse; no heavy imports here."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ToneCurve:
    """The darkening ``y = scale * x ** gamma`` (scale in (0, 1], gamma >= 1) of values in [0, 1],
    the training sampler's low light (`allinone.degradations.low_light`)."""

    scale: float
    gamma: float

    def undo(self, y: np.ndarray | float) -> np.ndarray:
        """The values before the darkening (float32; negative values read as 0)."""
        base = np.maximum(np.asarray(y, dtype=np.float64), 0.0) / self.scale
        return (base ** (1.0 / self.gamma)).astype(np.float32)

    def stops(self, level: float) -> float:
        """How many stops `undo` brightens a value of `level` (> 0)."""
        return float(np.log2(self.undo(np.float64(level)) / level))
