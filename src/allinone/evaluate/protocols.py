"""The image protocols, and `evaluate`, which runs the chosen ones and judges the goals on them
(each protocol is described in `allinone.evaluate`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from allinone.errors import InputError
from allinone.evaluate.baselines import (
    RL_ITERATIONS,
    clahe,
    classical_denoiser_name,
    dark_channel_prior,
    denoise_classical,
    richardson_lucy,
)
from allinone.evaluate.composition import run_composition
from allinone.evaluate.context import Context, Sample
from allinone.evaluate.images import read_grey, read_rgb
from allinone.evaluate.published import (
    PUBLISHED_DEHAZE,
    PUBLISHED_DENOISE,
    PUBLISHED_DERAIN,
    PUBLISHED_SR,
)
from allinone.evaluate.report import goals
from allinone.evaluate.results import Report, TaskResult
from allinone.evaluate.synthesis import (
    BLUR_LENGTH,
    EXPOSURE_STOPS,
    LOW_LIGHT,
    SIGMAS,
    add_noise,
    add_scene_haze,
    bicubic_pair,
    darken,
    motion_blur,
    underexpose,
)
from allinone.microscopy import (
    HELD_OUT_BITS,
    HELD_OUT_FAMILIES,
    acquire,
    draw_detector,
    draw_optics,
    image,
)

TASKS: tuple[str, ...] = (
    "denoise",
    "derain",
    "dehaze",
    "hazephotos",
    "sr",
    "deblur",
    "lowlight",
    "fmd",
    "fluorescence",
    "composition",
)
SR_SETS: tuple[str, ...] = ("Set5", "Set14", "Urban100_crop256_50")
SR_SCALES: tuple[int, ...] = (2, 4)
FMD_FIELDS = range(2, 7)
FLUORESCENCE_IMAGES = 8
FLUORESCENCE_SIZE = 256
FLUORESCENCE_SEED = 31
"""Seeds the held-out planes; training validates on others (`train.loop.held_out_fluorescence`)."""


def run_denoise(ctx: Context) -> list[TaskResult]:
    """CBSD68 at sigma 15, 25 and 50."""
    results = []
    for sigma in SIGMAS:
        samples = (
            Sample(path.stem, clean, add_noise(clean, sigma, index), sigma=sigma)
            for index, path, clean in ctx.cbsd68()
        )
        classical = (
            f"{classical_denoiser_name()}, true σ",
            "baseline",
            lambda s: denoise_classical(s.degraded, s.sigma),
        )
        result = ctx.measure(
            f"denoise-{sigma}", f"Denoising: CBSD68, σ = {sigma}", samples,
            ctx.methods("noisy input", classical),
        )  # fmt: skip
        result.references = PUBLISHED_DENOISE[sigma]
        results.append(result)
    return results


def _paired(ctx: Context, folder: str) -> Iterator[Sample]:
    for source, target in ctx.pairs(folder):
        yield Sample(source.stem, read_rgb(target), read_rgb(source))


def run_derain(ctx: Context) -> list[TaskResult]:
    """Rain100H: the pairs whose backgrounds no training photo shows."""
    result = ctx.measure(
        "derain", "Deraining: Rain100H", _paired(ctx, "Rain100H"), ctx.methods("rainy input")
    )
    result.references = PUBLISHED_DERAIN
    result.notes.append("Our Rain100H subset has 53 of the 100 pairs; published numbers use 100.")
    return [result]


def run_dehaze(ctx: Context) -> list[TaskResult]:
    """SOTS-indoor, one hazy image per scene for 25 scenes."""
    dcp = ("dark channel prior", "baseline", lambda s: dark_channel_prior(s.degraded))
    result = ctx.measure(
        "dehaze",
        "Dehazing: SOTS-indoor",
        _paired(ctx, "SOTS_indoor_25"),
        ctx.methods("hazy input", dcp),
    )
    result.references = PUBLISHED_DEHAZE
    result.notes.append(
        "Our SOTS-indoor subset has 25 of the 500 pairs; published numbers use 500."
    )
    return [result]


def run_hazephotos(ctx: Context) -> list[TaskResult]:
    """CBSD68 under `add_scene_haze`: haze from a model the training never used."""
    samples = (
        Sample(path.stem, clean, add_scene_haze(clean, index))
        for index, path, clean in ctx.cbsd68()
    )
    dcp = ("dark channel prior", "baseline", lambda s: dark_channel_prior(s.degraded))
    title = "Dehazing: CBSD68 under scene haze (depth from position and luminance)"
    return [ctx.measure("hazephotos", title, samples, ctx.methods("hazy input", dcp))]


def run_sr(ctx: Context) -> list[TaskResult]:
    """x2 and x4 on Set5, Set14 and the Urban100 crops; the input is bicubic-upsampled LR."""
    results = []
    for name in SR_SETS:
        for scale in SR_SCALES:
            samples = (
                Sample(path.stem, *bicubic_pair(read_rgb(path), scale))
                for path in ctx.files(f"{name}/HR")
            )
            model = ctx.model()
            methods = [("bicubic (input)", "baseline", lambda s: s.degraded), model]
            title = f"Upsampling: {name}, ×{scale}"
            result = ctx.measure(f"sr-{name}-x{scale}", title, samples, methods, shave=scale)
            result.references = PUBLISHED_SR.get((name, scale), [])
            result.notes.append(f"Y-PSNR: BT.601 luma with a {scale}-pixel border shaved.")
            results.append(result)
    return results


def run_deblur(ctx: Context) -> list[TaskResult]:
    """CBSD68 with seeded camera-shake kernels."""

    def samples() -> Iterator[Sample]:
        for index, path, clean in ctx.cbsd68():
            blurred, kernel = motion_blur(clean, index)
            yield Sample(path.stem, clean, blurred, kernel=kernel)

    rl = (
        f"Richardson-Lucy, true kernel, {RL_ITERATIONS} it.",
        "baseline",
        lambda s: richardson_lucy(s.degraded, s.kernel),
    )
    title = f"Motion deblurring: CBSD68, camera shake {BLUR_LENGTH:g} px"
    return [ctx.measure("deblur", title, samples(), ctx.methods("blurred input", rl))]


def run_lowlight(ctx: Context) -> list[TaskResult]:
    """CBSD68 darkened with photon noise, and under-exposed without noise, restored with the
    defaults: the Restorer itself must see that the photos are under-exposed."""
    clahe_method = ("CLAHE", "baseline", lambda s: clahe(s.degraded))
    noisy = (Sample(path.stem, clean, darken(clean, index)) for index, path, clean in ctx.cbsd68())
    params = ", ".join(f"{k} {v:.3g}" for k, v in LOW_LIGHT.items())
    noiseless = (Sample(path.stem, clean, underexpose(clean)) for _, path, clean in ctx.cbsd68())
    title = f"Low light: CBSD68 {EXPOSURE_STOPS} stops under in linear light, no noise"
    return [
        ctx.measure(
            "lowlight",
            f"Low light: CBSD68 ({params})",
            noisy,
            ctx.methods("dark input", clahe_method),
        ),
        ctx.measure("lowlight-ev", title, noiseless, ctx.methods("dark input", clahe_method)),
    ]


def run_fmd(ctx: Context) -> list[TaskResult]:
    """Real confocal noise: raw frame vs 50-frame average, fields 2-6."""
    folder = ctx.root / "FMD_Confocal_BPAE_B"
    names = [f"fov{n:02d}.png" for n in FMD_FIELDS][: ctx.limit]
    samples = (
        Sample(
            Path(name).stem, read_grey(folder / "target" / name), read_grey(folder / "input" / name)
        )
        for name in names
    )
    title = "Microscopy: FMD Confocal BPAE_B, fields 2–6 (real noise)"
    return [ctx.measure("fmd", title, samples, ctx.microscopy_methods())]


def fluorescence_samples(count: int, size: int) -> Iterator[Sample]:
    """`count` procedural planes of the held-out families through held-out detector depths."""
    rng = np.random.default_rng(FLUORESCENCE_SEED)
    for index in range(count):
        optics = draw_optics(rng)
        density = image(rng, (size, size), optics, HELD_OUT_FAMILIES)
        detector = draw_detector(rng, HELD_OUT_BITS)
        noisy, clean = acquire(density, detector, FLUORESCENCE_SEED * 1000 + index)
        name = f"{optics.kind}-{detector.photons:.0f}photons"
        low, high = float(clean.min()), float(clean.max())
        yield Sample(name, clean, noisy, span=(low, max(high, low + 1)))


def run_fluorescence(ctx: Context) -> list[TaskResult]:
    """Procedural specimens and detectors held out of training."""
    count = min(FLUORESCENCE_IMAGES, ctx.limit or FLUORESCENCE_IMAGES)
    title = "Microscopy: held-out procedural specimens (mitochondria, tissue), 12-bit counts"
    samples = fluorescence_samples(count, FLUORESCENCE_SIZE)
    return [ctx.measure("fluorescence", title, samples, ctx.microscopy_methods())]


IMAGE_PROTOCOLS: dict[str, Callable[[Context], list[TaskResult]]] = {
    "denoise": run_denoise,
    "derain": run_derain,
    "dehaze": run_dehaze,
    "hazephotos": run_hazephotos,
    "sr": run_sr,
    "deblur": run_deblur,
    "lowlight": run_lowlight,
    "fmd": run_fmd,
    "fluorescence": run_fluorescence,
}


def parse_tasks(text: str) -> list[str]:
    """`all` or a comma-separated list of `TASKS`, in `TASKS` order."""
    names = {name.strip() for name in text.split(",") if name.strip()}
    if names == {"all"}:
        return list(TASKS)
    unknown = sorted(names - set(TASKS))
    if unknown or not names:
        raise InputError(
            f"unknown tasks {unknown or text!r}; use all or some of {', '.join(TASKS)}"
        )
    return [name for name in TASKS if name in names]


def evaluate(ctx: Context, tasks: Iterable[str], meta: dict[str, str]) -> Report:
    """Run the chosen protocols and the goals on them."""
    tasks = list(tasks)
    results = [r for name in tasks if name in IMAGE_PROTOCOLS for r in IMAGE_PROTOCOLS[name](ctx)]
    composition = run_composition(ctx) if "composition" in tasks else None
    return Report(meta, results, composition, goals(results, composition))
