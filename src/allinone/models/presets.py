"""Model sizes. Sizes only: the wiring lives in `network.py`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Hyper-parameters of one `AllInOneNet` size."""

    name: str
    width: int
    enc_blocks: tuple[int, int, int]
    latent_blocks: int
    dec_blocks: tuple[int, int, int]
    refine_blocks: int
    block: str = "naf"
    heads: tuple[int, int, int, int] = (1, 2, 4, 8)
    ffn_expansion: float = 2.0
    num_atoms: int = 32
    atom_dim: int = 128
    rank: int = 4
    ndr: bool = True
    dfpir: bool = False
    degradation_width: int = 16

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, for model cards."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preset:
        """Inverse of `to_dict` (lists become tuples)."""
        fields: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**fields)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        width=8,
        enc_blocks=(1, 1, 1),
        latent_blocks=1,
        dec_blocks=(1, 1, 1),
        refine_blocks=0,
        num_atoms=8,
        atom_dim=16,
        rank=2,
        ndr=True,
        dfpir=True,
        degradation_width=8,
    ),
    "small": Preset(
        name="small",
        width=24,
        enc_blocks=(2, 2, 3),
        latent_blocks=4,
        dec_blocks=(2, 2, 2),
        refine_blocks=1,
    ),
    "base": Preset(
        name="base",
        width=32,
        enc_blocks=(2, 3, 4),
        latent_blocks=6,
        dec_blocks=(2, 2, 2),
        refine_blocks=2,
        dfpir=True,
    ),
    "paper": Preset(
        name="paper",
        width=48,
        enc_blocks=(4, 6, 6),
        latent_blocks=8,
        dec_blocks=(6, 6, 4),
        refine_blocks=4,
        block="restormer",
        ffn_expansion=2.66,
        dfpir=True,
    ),
}
"""`tiny` is for tests (< 0.5 M parameters); `small` is the shipped default's size;
`paper` is the papers' Restormer-48 size (blocks 4/6/6/8, refinement 4), kept for comparisons."""
