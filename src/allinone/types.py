"""Names shared by every part of the engine; no heavy imports here."""

from __future__ import annotations

DEGRADATIONS: tuple[str, ...] = ("noise", "blur", "haze", "rain", "low_light", "downsample")
"""The named degradation types, in the order of the composition head's outputs."""
