"""Restoration networks: NDR-Restore's degradation representation and DFPIR's perturbation."""

from allinone.models.network import AllInOneNet, NetOutput, build_network
from allinone.models.presets import PRESETS, Preset

__all__ = ["PRESETS", "AllInOneNet", "NetOutput", "Preset", "build_network"]
