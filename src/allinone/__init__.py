"""All-in-one image restoration engine: restore, analyse and fine-tune.

Importing this package is cheap: torch loads only when `Restorer` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from allinone.types import DEGRADATIONS

if TYPE_CHECKING:
    from allinone.infer.restorer import Restorer

__version__ = "0.1.0"
__all__ = ["DEGRADATIONS", "Restorer", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Restorer":
        from allinone.infer.restorer import Restorer

        return Restorer
    raise AttributeError(f"module 'allinone' has no attribute {name!r}")
