"""What a microscopist could use instead of the default model, for the benchmarks.

Each function takes one noisy plane of counts (any integer or float dtype) and returns an
estimate on the same scale as float32. The classical filters run on the plane scaled by its
0.1/99.9 percentiles, the scaling the model restores in.

- *Blind* filters see only the noisy plane: the noise sigma comes from
  `skimage.restoration.estimate_sigma`, and total variation's weight is `TV_WEIGHT_PER_SIGMA`
  times it, a ratio chosen on the FMD *training* fields 7-20 (`python -m
  allinone.microscopy_baselines DATA`), never on the fields or scenes the benchmark reports.
- *Tuned* filters pick their parameter per image against the truth, from `GRID` times the blind
  value: an upper bound that no user has, labelled as such in every report.
- `from_scratch` trains an untrained network of the default's size on the noisy plane alone
  (self-supervised, Noise2Void-style: `allinone.train.neighbours`) for a number of seconds, and
  `adapted` does the same starting from a trained model: together they show what the prior buys.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from skimage import restoration

if TYPE_CHECKING:
    from allinone.infer.options import RestoreOptions
    from allinone.infer.restorer import Restorer

TV_WEIGHT_PER_SIGMA = 5.0
"""Total variation's weight over the estimated noise sigma (both on the [0, 1] scale)."""
GRID = 2.0 ** np.arange(-2.0, 2.01, 0.5)
"""Multiples of the blind parameter a tuned filter tries."""
PERCENTILES = (0.1, 99.9)

Filter = Callable[[np.ndarray, float], np.ndarray]


def _scale(noisy: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(noisy, PERCENTILES)
    return float(low), float(max(high, low + 1e-6))


def _unit(noisy: np.ndarray) -> np.ndarray:
    """`noisy` scaled to about [0, 1] by its percentiles."""
    low, high = _scale(noisy)
    return (np.asarray(noisy, np.float64) - low) / (high - low)


def _scaled(noisy: np.ndarray, run: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`run` on `noisy` scaled to about [0, 1], mapped back to counts."""
    low, high = _scale(noisy)
    return (run(_unit(noisy)) * (high - low) + low).astype(np.float32)


def _with_sigma(method: Filter, sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    """`method` with its sigma fixed."""
    return lambda unit: method(unit, sigma)


def noise_sigma(unit: np.ndarray) -> float:
    """The noise sigma of a plane on the [0, 1] scale, read blind from the plane itself."""
    return max(float(restoration.estimate_sigma(unit)), 1e-4)


def _tv(unit: np.ndarray, sigma: float) -> np.ndarray:
    return restoration.denoise_tv_chambolle(unit, weight=TV_WEIGHT_PER_SIGMA * sigma)


def bm3d_module() -> ModuleType | None:
    """The `bm3d` package, or None when it is not installed (`pip install .[eval]`)."""
    try:
        import bm3d
    except ImportError:
        return None
    return bm3d


def _bm3d(unit: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D, or NL-means where the `bm3d` package is not installed."""
    bm3d = bm3d_module()
    if bm3d is None:
        return restoration.denoise_nl_means(
            unit, h=0.8 * sigma, sigma=sigma, patch_size=5, patch_distance=6
        )
    return np.asarray(bm3d.bm3d(unit, sigma), np.float64)


def bm3d_name() -> str:
    """The label of the block-matching filter this installation runs."""
    return "BM3D" if bm3d_module() is not None else "NL-means (bm3d not installed)"


def blind(noisy: np.ndarray, method: Filter) -> np.ndarray:
    """`method` with the noise sigma estimated from `noisy`."""
    return _scaled(noisy, lambda unit: method(unit, noise_sigma(unit)))


def tuned(noisy: np.ndarray, clean: np.ndarray, method: Filter) -> np.ndarray:
    """`method` with the multiple of the blind sigma in `GRID` that lands closest to `clean`."""
    sigma = noise_sigma(_unit(noisy))
    best: np.ndarray | None = None
    best_error = np.inf
    for factor in GRID:
        estimate = _scaled(noisy, _with_sigma(method, factor * sigma))
        error = float(np.mean((estimate - clean.astype(np.float32)) ** 2))
        if error < best_error:
            best, best_error = estimate, error
    assert best is not None
    return best


def tv_blind(noisy: np.ndarray) -> np.ndarray:
    """Total variation (Chambolle) with its weight set from the estimated noise."""
    return blind(noisy, _tv)


def tv_tuned(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Total variation with the weight that suits this image's truth best."""
    return tuned(noisy, clean, _tv)


def bm3d_blind(noisy: np.ndarray) -> np.ndarray:
    """BM3D with the estimated noise sigma."""
    return blind(noisy, _bm3d)


def bm3d_tuned(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """BM3D with the sigma that suits this image's truth best."""
    return tuned(noisy, clean, _bm3d)


def adapted(
    restorer: Restorer,
    noisy: np.ndarray,
    seconds: float,
    options: RestoreOptions | None = None,
    axes: str = "YX",
):
    """`restorer` adapted to `noisy` self-supervised for `seconds`, then its restoration, both
    under `options` (None: the defaults)."""
    from allinone.train.finetune import finetune

    result = finetune(restorer, [(noisy, None)], axes=axes, seconds=seconds, options=options)
    return result.restorer.restore(noisy, axes=axes, options=options)


def from_scratch(noisy: np.ndarray, seconds: float, preset: str = "small", axes: str = "YX"):
    """An untrained `preset` network trained on `noisy` alone for `seconds`, then applied."""
    from allinone.infer.restorer import Restorer

    return adapted(Restorer.from_pretrained(preset, device="cpu"), noisy, seconds, axes=axes)


def _choose_tv_ratio(root: Path) -> None:
    """Print the mean PSNR of blind TV at several weight ratios on FMD training fields 7-20
    (measured: 36.3, 37.7, 38.5, 38.8, 38.8, 38.4 dB at 1, 2, 3, 4, 6, 8 times sigma)."""
    import imageio.v3 as iio

    global TV_WEIGHT_PER_SIGMA
    folder = root / "FMD_Confocal_BPAE_B"
    pairs = [
        (
            iio.imread(folder / "input" / f"fov{n:02d}.png"),
            iio.imread(folder / "target" / f"fov{n:02d}.png"),
        )
        for n in range(7, 21)
    ]
    for ratio in (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0):
        TV_WEIGHT_PER_SIGMA = ratio
        scores = []
        for noisy, clean in pairs:
            restored = np.clip(tv_blind(noisy), 0, 255)
            mse = np.mean((restored - clean.astype(np.float32)) ** 2)
            scores.append(10 * np.log10(255**2 / mse))
        print(f"weight = {ratio} x sigma: {np.mean(scores):.2f} dB on fields 7-20")


if __name__ == "__main__":
    _choose_tv_ratio(Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data"))
