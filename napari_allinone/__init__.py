"""napari plugin for the all-in-one restoration engine: Restore, Degradation composition and
Fine-tune dock widgets, and degraded sample images.

Thin adapter: every computation happens in `allinone`; torch loads only when a widget or sample
first needs it.
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
