"""Procedural fluorescence scenes: fluorophore densities of specimens a microscope might image.

Each family draws a 2-D or 3-D density in [0, 1] (float32, brightest structure near 1) from a
NumPy generator, at widely drawn densities, sizes, orientations and contrasts. The families
stand for stains rather than for one specimen: nuclei (DAPI/Hoechst), cell bodies and membranes,
filaments (actin, microtubules), puncta (receptors, single molecules), vesicles (endosomes, as
rings), mitochondria (short tubules and networks) and tissue (dense multi-scale texture, as in
sections of brain or muscle). `composite` overlays a few families, as one channel of a
counterstained sample often shows. Optics and noise come later (`optics`, `detector`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

Shape = tuple[int, ...]
Family = Callable[[np.random.Generator, Shape], np.ndarray]


def _log_uniform(rng: np.random.Generator, low: float, high: float, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def _rotation(rng: np.random.Generator, ndim: int) -> np.ndarray:
    """A uniformly random rotation matrix (ndim x ndim)."""
    q, r = np.linalg.qr(rng.normal(size=(ndim, ndim)))
    return q * np.sign(np.diag(r))


def _smooth_noise(rng: np.random.Generator, shape: Shape, scale: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian noise smoothed over `scale` pixels."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), scale, mode="wrap")
    return ((field - field.mean()) / (field.std() + 1e-12)).astype(np.float32)


def _normalised(density: np.ndarray) -> np.ndarray:
    """`density` scaled so that its brightest structure (99.95th percentile) reads 1."""
    density = np.maximum(density, 0)
    top = float(np.percentile(density, 99.95))
    return (density / top if top > 0 else density).astype(np.float32)


def _count(rng: np.random.Generator, shape: Shape, size: float, fill: float) -> int:
    """How many objects of linear `size` cover about `fill` of an image of `shape`, drawn
    Poisson, at least one."""
    area = float(np.prod(shape))
    return max(int(rng.poisson(fill * area / size ** len(shape))), 1)


def _stamp(image: np.ndarray, centre: np.ndarray, reach: float, draw) -> None:
    """Add `draw(offsets)` to `image` around `centre` within `reach` pixels; `offsets` are the
    pixel positions minus the centre, shaped (ndim, *box)."""
    low = np.maximum(np.floor(centre - reach).astype(int), 0)
    high = np.minimum(np.ceil(centre + reach).astype(int) + 1, image.shape)
    if np.any(high <= low):
        return
    axes = [np.arange(a, b) - c for a, b, c in zip(low, high, centre, strict=True)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"))
    box = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
    image[box] += draw(offsets)


def _ellipsoid(offsets: np.ndarray, radii: np.ndarray, rotation: np.ndarray, edge: float):
    """A filled ellipsoid with soft edges `edge` pixels wide: 1 inside, 0 outside."""
    local = np.tensordot(rotation.T, offsets, axes=1)
    distance = np.sqrt(sum((local[i] / radii[i]) ** 2 for i in range(len(radii))))
    return 1 / (1 + np.exp((distance - 1) * radii.min() / edge))


def _curve(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    length: float,
    stiffness: float,
    step: float = 0.5,
) -> np.ndarray:
    """Points (n, ndim) along a random path of persistence length `stiffness` pixels: its
    heading's angles (azimuth, and elevation in 3-D) take a Gaussian random walk."""
    steps = max(int(length / step), 2)
    ndim = len(start)
    kick = np.sqrt(step / stiffness)
    azimuth = np.arctan2(direction[-2], direction[-1]) + np.cumsum(rng.normal(0, kick, steps))
    lateral = np.stack([np.sin(azimuth), np.cos(azimuth)], axis=1)
    if ndim == 3:
        tilt = np.arcsin(np.clip(direction[0] / np.linalg.norm(direction), -1, 1))
        elevation = tilt + np.cumsum(rng.normal(0, kick, steps))
        lateral = np.concatenate(
            [np.sin(elevation)[:, None], np.cos(elevation)[:, None] * lateral], axis=1
        )
    return np.asarray(start, float) + step * np.cumsum(lateral, axis=0)


def _splat(shape: Shape, points: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """Point masses at `points` (n, ndim), spread linearly over their neighbouring pixels."""
    image = np.zeros(shape, np.float64)
    weights = np.broadcast_to(np.asarray(weights, float), (len(points),))
    base = np.floor(points).astype(int)
    frac = points - base
    ndim = len(shape)
    for corner in range(2**ndim):
        bits = np.array([(corner >> d) & 1 for d in range(ndim)])
        index = base + bits
        w = weights * np.prod(np.where(bits, frac, 1 - frac), axis=1)
        inside = np.all((index >= 0) & (index < shape), axis=1)
        np.add.at(image, tuple(index[inside].T), w[inside])
    return image


def _draw_curves(
    rng: np.random.Generator,
    shape: Shape,
    count: int,
    lengths: tuple[float, float],
    stiffness: float,
    width: float,
    heading: np.ndarray | None = None,
    spread: float = 1.0,
) -> np.ndarray:
    """`count` random curves, each of its own brightness, drawn `width` pixels thick (sigma)."""
    ndim = len(shape)
    points, weights = [], []
    for _ in range(count):
        start = rng.uniform(0, shape)
        direction = rng.normal(size=ndim)
        if heading is not None:
            direction = heading + spread * direction / np.linalg.norm(direction)
        curve = _curve(rng, start, direction, rng.uniform(*lengths), stiffness)
        points.append(curve)
        weights.append(np.full(len(curve), _log_uniform(rng, 0.3, 1.0)))
    if not points:
        return np.zeros(shape, np.float32)
    image = _splat(shape, np.concatenate(points), np.concatenate(weights))
    return ndimage.gaussian_filter(image, width)


def nuclei(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Ellipsoidal nuclei with chromatin texture and nucleoli, sparse to crowded."""
    ndim = len(shape)
    radius = _log_uniform(rng, 3, min(shape[-2:]) / 6)
    image = np.zeros(shape, np.float32)
    texture = _smooth_noise(rng, shape, max(radius / 6, 0.7))
    for _ in range(_count(rng, shape, 2 * radius, rng.uniform(0.05, 0.6))):
        radii = radius * rng.uniform(0.6, 1.4) * rng.uniform(0.7, 1.0, ndim)
        rotation = _rotation(rng, ndim)
        brightness = _log_uniform(rng, 0.25, 1.0)
        edge = rng.uniform(0.3, 1.5)
        _stamp(
            image,
            rng.uniform(0, shape),
            radii.max() + 4 * edge,
            lambda o, r=radii, q=rotation, b=brightness, e=edge: b * _ellipsoid(o, r, q, e),
        )
    overlap_capped = np.minimum(image, 1.0)
    return _normalised(overlap_capped * (1 + rng.uniform(0.1, 0.6) * texture))


def cells(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Cell bodies of a tessellated monolayer: cytoplasm of per-cell brightness, bright
    membranes, optionally dark nuclei; elongated by a random stretch."""
    ndim = len(shape)
    size = _log_uniform(rng, 8, min(shape[-2:]) / 2)
    stretch = np.ones(ndim)
    stretch[-1] = rng.uniform(0.5, 2.0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    seeds = rng.uniform(0, shape, (max(_count(rng, shape, size, 1.0), 2), ndim))
    tree = cKDTree(seeds * stretch)
    distance, label = tree.query(grid.reshape(-1, ndim) * stretch, k=2)
    apart = np.linalg.norm((seeds[label[:, 1]] - seeds[label[:, 0]]) * stretch, axis=1)
    gap = ((distance[:, 1] ** 2 - distance[:, 0] ** 2) / (2 * apart)).reshape(shape)
    nearest = distance[:, 0].reshape(shape)
    owner = label[:, 0].reshape(shape)
    membrane = np.exp(-((gap / rng.uniform(0.5, 2.0)) ** 2)) * rng.uniform(0, 1)
    cytoplasm = _log_uniform(rng, 0.05, 1.0, len(seeds))[owner] * rng.uniform(0, 1)
    falloff = np.exp(-nearest / (size * rng.uniform(0.3, 2.0)))
    body = cytoplasm * falloff * (1 + 0.3 * _smooth_noise(rng, shape, rng.uniform(1, 4)))
    if rng.random() < 0.5:
        body *= 1 - 1 / (1 + np.exp((nearest - size * rng.uniform(0.15, 0.3)) / 1.0))
    return _normalised(body + membrane)


def filaments(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Actin- or microtubule-like filaments: long stiff curves, random or bundled, thin to
    thick, few to a dense mesh."""
    length = min(shape[-2:])
    bundled = rng.random() < 0.4
    heading = rng.normal(size=len(shape)) if bundled else None
    if heading is not None and len(shape) == 3:
        heading[0] *= 0.2
    image = _draw_curves(
        rng,
        shape,
        count=int(_log_uniform(rng, 5, 300) * np.prod(shape[-2:]) / 256**2) + 1,
        lengths=(0.2 * length, 2.0 * length),
        stiffness=_log_uniform(rng, 20, 2000),
        width=rng.uniform(0.4, 1.5),
        heading=heading,
        spread=rng.uniform(0.05, 0.5),
    )
    return _normalised(image)


def puncta(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Diffraction-limited spots of widely varying brightness, scattered or clustered."""
    ndim = len(shape)
    area = float(np.prod(shape))
    count = int(_log_uniform(rng, 20, 3000) * area / 256**2) + 1
    if rng.random() < 0.5:
        parents = rng.uniform(0, shape, (max(count // 20, 1), ndim))
        points = parents[rng.integers(len(parents), size=count)]
        points = points + rng.normal(size=(count, ndim)) * _log_uniform(rng, 2, 25)
    else:
        points = rng.uniform(0, shape, (count, ndim))
    weights = _log_uniform(rng, 0.1, 1.0, count)
    image = ndimage.gaussian_filter(_splat(shape, points, weights), rng.uniform(0.3, 1.5))
    return _normalised(image)


def vesicles(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Hollow rings (shells in 3-D) of a few pixels' radius: endosomes, lipid droplets."""
    image = np.zeros(shape, np.float32)
    for _ in range(_count(rng, shape, 12, rng.uniform(0.02, 0.3))):
        radius = rng.uniform(2, 10)
        wall = rng.uniform(0.5, 1.5)
        brightness = _log_uniform(rng, 0.2, 1.0)

        def ring(o, r=radius, w=wall, b=brightness):
            distance = np.sqrt((o**2).sum(axis=0))
            return b * np.exp(-(((distance - r) / w) ** 2))

        _stamp(image, rng.uniform(0, shape), radius + 3 * wall, ring)
    return _normalised(image)


def mitochondria(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Short, bent tubules, alone or joined into networks."""
    count = int(_log_uniform(rng, 20, 600) * np.prod(shape[-2:]) / 256**2) + 1
    image = _draw_curves(
        rng,
        shape,
        count=count,
        lengths=(3, rng.uniform(8, 40)),
        stiffness=_log_uniform(rng, 3, 30),
        width=rng.uniform(0.8, 2.5),
    )
    return _normalised(image)


def tissue(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Dense texture of a section: multi-scale random fields made blobby (cell-dense tissue) or
    ridged (neuropil, fibres)."""
    scales = _log_uniform(rng, 0.8, 12, 3)
    weights = rng.dirichlet(np.ones(3))
    field = sum(w * _smooth_noise(rng, shape, s) for w, s in zip(weights, scales, strict=True))
    field = field / (field.std() + 1e-12)
    if rng.random() < 0.5:
        image = np.logaddexp(0, rng.uniform(1, 4) * (field - rng.uniform(-0.5, 1.5)))
    else:
        image = np.maximum(1 - np.abs(field) / rng.uniform(0.2, 1.0), 0) ** rng.uniform(1, 3)
    return _normalised(image)


FAMILIES: dict[str, Family] = {
    "nuclei": nuclei,
    "cells": cells,
    "filaments": filaments,
    "puncta": puncta,
    "vesicles": vesicles,
    "mitochondria": mitochondria,
    "tissue": tissue,
}
"""Every scene family by name."""

HELD_OUT_FAMILIES: tuple[str, ...] = ("mitochondria", "tissue")
"""Families never drawn in training: validation reports on them as unseen specimens."""

TRAINING_FAMILIES: tuple[str, ...] = tuple(f for f in FAMILIES if f not in HELD_OUT_FAMILIES)


def composite(rng: np.random.Generator, shape: Shape, families: Sequence[str]) -> np.ndarray:
    """One to three of `families` overlaid at random relative brightness."""
    count = min(len(families), int(rng.choice([1, 1, 2, 3])))
    chosen = rng.choice(len(families), size=count, replace=False)
    layers = [FAMILIES[families[i]](rng, shape) * _log_uniform(rng, 0.2, 1.0) for i in chosen]
    return _normalised(sum(layers))


def scene(
    rng: np.random.Generator, shape: Shape, families: Sequence[str] = TRAINING_FAMILIES
) -> np.ndarray:
    """A random in-focus density drawn from `families` (one alone, or a composite)."""
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        raise ValueError(f"unknown scene families {unknown}; expected names from {list(FAMILIES)}")
    return composite(rng, shape, list(families))
